//! The directory of the config file being read, so that an option naming another file (a
//! `rhai` transform's `file = "scripts/shape.rhai"`) means a path next to the config, as users
//! expect, and not one that changes with the directory `tapio` was started in. Serde hands a
//! `Deserialize` impl no context, so the loader sets the directory for the duration of parsing
//! and the options that name files resolve against it.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

thread_local! {
    static CONFIG_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Runs `parse` with `dir` as the directory relative paths in the config resolve against;
/// the previous directory (if any) is restored afterwards, also when `parse` panics.
pub fn with_config_dir<R>(dir: &Path, parse: impl FnOnce() -> R) -> R {
    struct Restore(Option<PathBuf>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CONFIG_DIR.with(|current| *current.borrow_mut() = self.0.take());
        }
    }
    let previous = CONFIG_DIR.with(|current| current.replace(Some(dir.to_path_buf())));
    let _restore = Restore(previous);
    parse()
}

/// `path` as written in the config, resolved: absolute paths as they are, relative ones
/// against the config file's directory while one is being read, else against the working
/// directory (a config given as text, in tests or through `$TAPIO_CONFIG`).
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    CONFIG_DIR.with(|dir| match &*dir.borrow() {
        Some(dir) => dir.join(path),
        None => path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_directory_only_while_it_is_read() {
        let relative = Path::new("scripts/shape.rhai");
        assert_eq!(resolve(relative), relative);
        let inside = with_config_dir(Path::new("/etc/tapio"), || {
            let nested = with_config_dir(Path::new("/srv"), || resolve(relative));
            assert_eq!(nested, Path::new("/srv/scripts/shape.rhai"));
            (resolve(relative), resolve(Path::new("/abs.rhai")))
        });
        assert_eq!(inside.0, Path::new("/etc/tapio/scripts/shape.rhai"));
        assert_eq!(inside.1, Path::new("/abs.rhai"));
        assert_eq!(resolve(relative), relative);
    }
}
