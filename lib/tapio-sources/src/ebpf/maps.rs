//! What user space writes into the BPF maps at start (the in-kernel filters) and reads back
//! while running (the count of records lost to a full ring buffer).

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuArray};

use super::EbpfConfig;
use super::cgroup;

/// Entries each filter map holds (`max_entries` in `ebpf/tapio.bpf.c`).
pub(super) const MAX_FILTER_ENTRIES: usize = 64;
/// `task->comm` holds 15 bytes and a NUL.
const COMM_LEN: usize = 16;
/// `MAX_PREFIXES` and `PREFIX_LEN` in `ebpf/tapio.bpf.c`.
pub(super) const MAX_PREFIXES: usize = 8;
pub(super) const PREFIX_LEN: usize = 64;

/// The `filter_flags` bits of `ebpf/tapio.bpf.c`.
const FILTER_COMM: u32 = 1;
const FILTER_CGROUP: u32 = 2;
const FILTER_CONTAINERS: u32 = 4;
const FILTER_PORTS: u32 = 8;
const FILTER_PATH: u32 = 16;

/// The in-kernel filters, checked and encoded as the maps store them.
#[derive(Debug, Default)]
pub(super) struct Filters {
    comms: Vec<[u8; COMM_LEN]>,
    cgroups: Vec<u64>,
    containers_only: bool,
    ports: Vec<u16>,
    /// `struct path_prefix`: the length, then the bytes.
    prefixes: Vec<[u8; 4 + PREFIX_LEN]>,
}

impl Filters {
    /// Checks the filter options; cgroup paths must exist (their ids are what the kernel
    /// compares).
    pub(super) fn from_config(config: &EbpfConfig) -> Result<Self, String> {
        for (option, len) in [
            ("comms", config.comms.len()),
            ("cgroups", config.cgroups.len()),
            ("ports", config.ports.len()),
        ] {
            if len > MAX_FILTER_ENTRIES {
                return Err(format!(
                    "`{option}` has {len} entries; at most {MAX_FILTER_ENTRIES} are allowed"
                ));
            }
        }
        if config.file_prefixes.len() > MAX_PREFIXES {
            return Err(format!(
                "`file_prefixes` has {} entries; at most {MAX_PREFIXES} are allowed",
                config.file_prefixes.len()
            ));
        }
        let comms = config
            .comms
            .iter()
            .map(|comm| {
                if comm.is_empty() || comm.len() >= COMM_LEN || comm.contains('\0') {
                    return Err(format!(
                        "`comms` entry {comm:?} must be 1 to {} bytes: the kernel keeps only \
                         that much of a command name",
                        COMM_LEN - 1
                    ));
                }
                let mut key = [0u8; COMM_LEN];
                key[..comm.len()].copy_from_slice(comm.as_bytes());
                Ok(key)
            })
            .collect::<Result<_, _>>()?;
        let cgroups = config
            .cgroups
            .iter()
            .map(|path| cgroup::cgroup_id(path).map_err(|e| format!("`cgroups` entry: {e}")))
            .collect::<Result<_, _>>()?;
        let prefixes = config
            .file_prefixes
            .iter()
            .map(|prefix| {
                if prefix.is_empty() || prefix.len() > PREFIX_LEN {
                    return Err(format!(
                        "`file_prefixes` entry {prefix:?} must be 1 to {PREFIX_LEN} bytes"
                    ));
                }
                let mut entry = [0u8; 4 + PREFIX_LEN];
                entry[..4].copy_from_slice(&(prefix.len() as u32).to_ne_bytes());
                entry[4..4 + prefix.len()].copy_from_slice(prefix.as_bytes());
                Ok(entry)
            })
            .collect::<Result<_, _>>()?;
        Ok(Filters {
            comms,
            cgroups,
            containers_only: config.containers_only,
            ports: config.ports.clone(),
            prefixes,
        })
    }

    /// The `filter_flags` global: which filters the programs apply.
    pub(super) fn flags(&self) -> u32 {
        [
            (!self.comms.is_empty(), FILTER_COMM),
            (!self.cgroups.is_empty(), FILTER_CGROUP),
            (self.containers_only, FILTER_CONTAINERS),
            (!self.ports.is_empty(), FILTER_PORTS),
            (!self.prefixes.is_empty(), FILTER_PATH),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .fold(0, |flags, (_, bit)| flags | bit)
    }

    /// Fills the filter maps of a loaded (not yet attached) object.
    pub(super) fn write(&self, bpf: &mut Ebpf) -> Result<(), String> {
        fn map<'a>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map, String> {
            bpf.map_mut(name)
                .ok_or_else(|| format!("the BPF object has no map {name}"))
        }
        let failed = |name: &str, e: aya::maps::MapError| format!("writing map {name}: {e}");
        let mut comms: HashMap<_, [u8; COMM_LEN], u8> =
            HashMap::try_from(map(bpf, "comm_filter")?).map_err(|e| failed("comm_filter", e))?;
        for comm in &self.comms {
            comms
                .insert(comm, 1, 0)
                .map_err(|e| failed("comm_filter", e))?;
        }
        let mut cgroups: HashMap<_, u64, u8> = HashMap::try_from(map(bpf, "cgroup_filter")?)
            .map_err(|e| failed("cgroup_filter", e))?;
        for id in &self.cgroups {
            cgroups
                .insert(id, 1, 0)
                .map_err(|e| failed("cgroup_filter", e))?;
        }
        let mut ports: HashMap<_, u16, u8> =
            HashMap::try_from(map(bpf, "port_filter")?).map_err(|e| failed("port_filter", e))?;
        for port in &self.ports {
            ports
                .insert(port, 1, 0)
                .map_err(|e| failed("port_filter", e))?;
        }
        let mut prefixes: Array<_, [u8; 4 + PREFIX_LEN]> =
            Array::try_from(map(bpf, "path_filter")?).map_err(|e| failed("path_filter", e))?;
        for (index, prefix) in self.prefixes.iter().enumerate() {
            prefixes
                .set(index as u32, prefix, 0)
                .map_err(|e| failed("path_filter", e))?;
        }
        Ok(())
    }
}

/// The per-CPU count of records the programs could not reserve room for.
pub(super) struct LostCounter {
    map: PerCpuArray<MapData, u64>,
    reported: u64,
}

impl LostCounter {
    /// Takes the `lost` map out of the object.
    pub(super) fn take(bpf: &mut Ebpf) -> Result<Self, String> {
        let map = bpf
            .take_map("lost")
            .ok_or("the BPF object has no map lost")?;
        let map = PerCpuArray::try_from(map).map_err(|e| format!("map lost: {e}"))?;
        Ok(LostCounter { map, reported: 0 })
    }

    /// Records lost since the previous call.
    pub(super) fn new_losses(&mut self) -> u64 {
        let Ok(per_cpu) = self.map.get(&0, 0) else {
            return 0;
        };
        let total: u64 = per_cpu.iter().sum();
        let new = total.saturating_sub(self.reported);
        self.reported = total;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(options: serde_json::Value) -> EbpfConfig {
        serde_json::from_value(options).unwrap()
    }

    #[test]
    fn flags_follow_the_options() {
        let none = Filters::from_config(&config(serde_json::json!({}))).unwrap();
        assert_eq!(none.flags(), 0);
        let some = Filters::from_config(&config(serde_json::json!({
            "comms": ["curl"], "ports": [80, 443], "containers_only": true,
            "programs": ["file_open"], "file_prefixes": ["/etc/"]
        })))
        .unwrap();
        assert_eq!(
            some.flags(),
            FILTER_COMM | FILTER_CONTAINERS | FILTER_PORTS | FILTER_PATH
        );
        assert_eq!(&some.comms[0][..5], b"curl\0");
        assert_eq!(&some.prefixes[0][..4], &5u32.to_ne_bytes());
        assert_eq!(&some.prefixes[0][4..9], b"/etc/");
    }

    #[test]
    fn rejects_what_the_kernel_cannot_match() {
        let error = |options| Filters::from_config(&config(options)).unwrap_err();
        assert!(error(serde_json::json!({ "comms": ["a-very-long-command"] })).contains("15"));
        assert!(error(serde_json::json!({ "comms": [""] })).contains("comms"));
        let many: Vec<u16> = (1..=65).collect();
        assert!(error(serde_json::json!({ "ports": many })).contains("at most 64"));
        let long = "/".repeat(PREFIX_LEN + 1);
        assert!(error(serde_json::json!({ "file_prefixes": [long] })).contains("file_prefixes"));
        assert!(
            error(serde_json::json!({ "cgroups": ["/no/such/tapio/cgroup"] })).contains("cgroups")
        );
    }
}
