//! The names container runtimes and the kubelet give cgroups and systemd units, read back into
//! the container id and the pod uid they encode. The `ebpf` source reads them in a task's
//! cgroup path, the `systemd` source in unit and slice names: one reading for both.
//!
//! ```text
//! kubepods-burstable-pod<uid with _>.slice   kubepods-pod<uid with _>.slice   pod<uid>
//! cri-containerd-<id>.scope   crio-<id>.scope   docker-<id>.scope   libpod-<id>.scope   <id>
//! ```

/// Container ids are 64 lowercase hex digits for containerd, Docker, CRI-O and Podman.
const CONTAINER_ID_LEN: usize = 64;
/// Systemd scope names that carry a container id, by runtime.
const SCOPE_PREFIXES: [&str; 4] = ["cri-containerd-", "docker-", "crio-", "libpod-"];

fn is_container_id(text: &str) -> bool {
    text.len() == CONTAINER_ID_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container id of `cri-containerd-<id>.scope` and the like, or of a bare `<id>` (the
/// cgroupfs driver's cgroup name).
pub(crate) fn container_id(name: &str) -> Option<&str> {
    let id = match name.strip_suffix(".scope") {
        Some(scope) => SCOPE_PREFIXES
            .iter()
            .find_map(|prefix| scope.strip_prefix(prefix))?,
        None => name,
    };
    is_container_id(id).then_some(id)
}

/// The pod uid (with dashes) of `kubepods-<qos>-pod<uid with _>.slice`,
/// `kubepods-pod<uid with _>.slice` (systemd driver) or `pod<uid>` (cgroupfs driver).
pub(crate) fn pod_uid(name: &str) -> Option<String> {
    let uid = match name.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods-") => slice.rsplit_once("-pod")?.1,
        Some(_) => return None,
        None => name.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    let shape_ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    shape_ok.then_some(uid)
}
