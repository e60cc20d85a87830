//! Container attribution: the kernel reports a task's cgroup v2 id; user space turns it into the
//! cgroup's path once (open the cgroup by its id, read the path back) and the path into the
//! container id and the pod uid that container runtimes and the kubelet encode in it:
//!
//! ```text
//! /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
//! /kubepods/burstable/pod<uid>/<id>                     (cgroupfs driver)
//! /system.slice/docker-<id>.scope, crio-<id>.scope, libpod-<id>.scope
//! ```
//!
//! Results are cached by cgroup id (ids are never reused), so a busy container costs one lookup.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::util::kubepods::{container_id, pod_uid};

/// Cgroups remembered at most; past it the cache starts over (a node rarely has this many).
const MAX_CACHED: usize = 16_384;
/// `FILEID_KERNFS`: a kernfs file handle is the node's 64-bit id, which is the cgroup id.
const FILEID_KERNFS: i32 = 0xfe;

/// What a cgroup path says about the processes in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Attribution {
    /// The container's id, when the cgroup is (or is inside) a container's.
    pub(super) container_id: Option<String>,
    /// The Kubernetes pod uid, when the cgroup is inside a pod's slice.
    pub(super) pod_uid: Option<String>,
}

impl Attribution {
    /// Reads the container id and pod uid out of a cgroup path; the innermost match wins.
    pub(super) fn from_path(path: &str) -> Self {
        let mut attribution = Attribution::default();
        for component in path.split('/') {
            if let Some(id) = container_id(component) {
                attribution.container_id = Some(id.to_owned());
            } else if let Some(uid) = pod_uid(component) {
                attribution.pod_uid = Some(uid);
            }
        }
        attribution
    }

    fn is_empty(&self) -> bool {
        self.container_id.is_none() && self.pod_uid.is_none()
    }
}

/// Resolves cgroup ids through the cgroup v2 mount, with a cache.
pub(super) struct CgroupResolver {
    /// The cgroup2 mount (e.g. `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`) and an open handle
    /// on it for `open_by_handle_at`; None when the node has no cgroup v2 hierarchy.
    mount: Option<(PathBuf, File)>,
    cache: HashMap<u64, Option<Arc<Attribution>>>,
}

impl CgroupResolver {
    /// A resolver for this node's cgroup v2 hierarchy.
    pub(super) fn new() -> Self {
        let mount = cgroup2_mount().and_then(|path| {
            let dir = File::open(&path).ok()?;
            Some((path, dir))
        });
        CgroupResolver {
            mount,
            cache: HashMap::new(),
        }
    }

    /// What the cgroup `id` says about its processes; None for cgroups outside any container
    /// or pod, and for cgroups already gone.
    pub(super) fn resolve(&mut self, id: u64) -> Option<Arc<Attribution>> {
        if id == 0 {
            return None;
        }
        if let Some(known) = self.cache.get(&id) {
            return known.clone();
        }
        let attribution = self
            .path_of(id)
            .map(|path| Attribution::from_path(&path))
            .filter(|attribution| !attribution.is_empty())
            .map(Arc::new);
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(id, attribution.clone());
        attribution
    }

    /// Seeds the cache, for tests that have no such cgroup.
    #[cfg(test)]
    pub(super) fn remember(&mut self, id: u64, path: &str) {
        let attribution = Attribution::from_path(path);
        self.cache.insert(id, Some(Arc::new(attribution)));
    }

    /// The cgroup's path below the mount, found by opening it by its id (needs
    /// CAP_DAC_READ_SEARCH, which a root agent has).
    fn path_of(&self, id: u64) -> Option<String> {
        let (mount, dir) = self.mount.as_ref()?;
        let mut handle = KernfsHandle::new(id);
        // SAFETY: `handle` is a valid kernfs file handle (see `KernfsHandle`).
        let fd = unsafe {
            libc::open_by_handle_at(
                dir.as_raw_fd(),
                handle.as_mut_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        let below = path.strip_prefix(mount).ok()?;
        Some(format!("/{}", below.display()))
    }
}

/// A `struct file_handle` with the 8 bytes of `f_handle` a kernfs node (a cgroup) needs.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

impl KernfsHandle {
    fn new(id: u64) -> Self {
        KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        }
    }

    fn as_mut_ptr(&mut self) -> *mut libc::file_handle {
        (&raw mut *self).cast()
    }
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on unified systems,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub(super) fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        if filesystem.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        mount.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The id of the cgroup at `path` (absolute, or relative to the cgroup2 mount), as the kernel
/// reports it: the directory's inode number on 64-bit kernels, checked through its file handle.
pub(super) fn cgroup_id(path: &str) -> Result<u64, String> {
    let mount = cgroup2_mount().ok_or("the node has no cgroup v2 hierarchy mounted")?;
    let full = if Path::new(path).starts_with(&mount) {
        PathBuf::from(path)
    } else {
        mount.join(path.trim_start_matches('/'))
    };
    let c_path = CString::new(full.as_os_str().as_bytes())
        .map_err(|_| format!("cgroup path {path:?} contains a NUL byte"))?;
    let mut handle = KernfsHandle::new(0);
    let mut mount_id = 0;
    // SAFETY: `c_path` is NUL-terminated; `handle` has room for the 8 bytes `handle_bytes`
    // announces, which is what a kernfs handle takes.
    let status = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            handle.as_mut_ptr(),
            &mut mount_id,
            0,
        )
    };
    if status != 0 {
        return Err(format!(
            "cgroup {}: {}",
            full.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(handle.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f0b2c9e6d1a8b7c3e5f9a0d2c4b6e8f1a3c5e7b9d0f2a4c6e8b0d2f4a6c8e0b";

    #[test]
    fn reads_containerd_scopes_inside_pod_slices() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice/cri-containerd-{ID}.scope"
        );
        let attribution = Attribution::from_path(&path);
        assert_eq!(attribution.container_id.as_deref(), Some(ID));
        assert_eq!(
            attribution.pod_uid.as_deref(),
            Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
    }

    #[test]
    fn reads_other_runtimes_and_the_cgroupfs_driver() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/kubepods/besteffort/pod1b4e28ba-2fa1-11d2-883f-0016d3cca427/{ID}"),
            format!(
                "/kubepods.slice/kubepods-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice/crio-{ID}.scope"
            ),
        ] {
            let attribution = Attribution::from_path(&path);
            assert_eq!(attribution.container_id.as_deref(), Some(ID), "{path}");
        }
        let cgroupfs = Attribution::from_path(&format!(
            "/kubepods/besteffort/pod1b4e28ba-2fa1-11d2-883f-0016d3cca427/{ID}"
        ));
        assert_eq!(
            cgroupfs.pod_uid.as_deref(),
            Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
    }

    #[test]
    fn ignores_host_cgroups() {
        for path in [
            "/",
            "/system.slice/containerd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods.slice/kubepods-burstable.slice",
            "/docker-notahexid.scope",
            "/podcast",
        ] {
            assert_eq!(
                Attribution::from_path(path),
                Attribution::default(),
                "{path}"
            );
        }
    }
}
