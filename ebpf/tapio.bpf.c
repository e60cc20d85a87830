// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Tapio's kernel side: tracepoint programs that report process lifecycles, TCP connections and
 * OOM kills into one ring buffer, read by the `ebpf` source
 * (lib/tapio-sources/src/ebpf/). Records are fixed-layout structs; the byte offsets below are
 * mirrored by lib/tapio-sources/src/ebpf/events.rs, so change both together.
 *
 * Only tracepoints are used (classic `tracepoint/` programs, plus one `tp_btf/` program where the
 * classic tracepoint lacks the task): kprobes and fentry are not available on every node.
 * Field reads go through CO-RE (BPF_CORE_READ, preserve_access_index), so one object runs on
 * any kernel with BTF.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16
#define PATH_LEN 256
#define PREFIX_LEN 64
#define MAX_PREFIXES 8
#define MAX_CGROUP_DEPTH 16
#define CGROUP_NAME_LEN 128
#define CONTAINER_ID_LEN 64

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define ETIMEDOUT 110

enum record_kind {
	RECORD_EXEC = 1,
	RECORD_EXIT = 2,
	RECORD_OOM_KILL = 3,
	RECORD_OPEN = 4,
	RECORD_TCP = 5,
};

enum tcp_op {
	TCP_OP_CONNECT = 1,
	TCP_OP_CLOSE = 2,
	TCP_OP_RETRANSMIT = 3,
	TCP_OP_ERROR = 4,
	TCP_OP_TIMEOUT = 5,
};

/* Which filters the source configured (the `filter_flags` global). */
enum filter {
	FILTER_COMM = 1,
	FILTER_CGROUP = 2,
	FILTER_CONTAINERS = 4,
	FILTER_PORTS = 8,
	FILTER_PATH = 16,
};
#define PROCESS_FILTERS (FILTER_COMM | FILTER_CGROUP | FILTER_CONTAINERS)

/* Every record starts with the task it is about; on TCP records the socket's owner (pid 0 when
 * it is not known). */
struct task_header {
	u64 timestamp_ns; /*  0: bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	u64 cgroup_id;    /*  8: cgroup v2 id (kernfs node id) */
	u32 kind;         /* 16: enum record_kind */
	u32 pid;          /* 20: thread-group id */
	u32 reserved;     /* 24 */
	u32 uid;          /* 28 */
	char comm[TASK_COMM_LEN]; /* 32 */
};

/* RECORD_EXEC, RECORD_OPEN. */
struct path_record {
	struct task_header h;
	u32 ppid;            /* 48: exec only */
	u32 reserved;        /* 52 */
	char path[PATH_LEN]; /* 56: NUL-terminated */
};

/* RECORD_EXIT; RECORD_OOM_KILL is a bare task_header (the victim). */
struct exit_record {
	struct task_header h;
	u32 ppid;      /* 48 */
	s32 exit_code; /* 52: task->exit_code, (status << 8) | signal */
};

/* RECORD_TCP. Ports in host order, addresses in network order (4 bytes used for IPv4). */
struct tcp_record {
	struct task_header h;
	u32 op;       /* 48: enum tcp_op */
	s32 error;    /* 52: errno (sk_err) for TCP_OP_ERROR / TCP_OP_TIMEOUT */
	u16 family;   /* 56 */
	u16 sport;    /* 58 */
	u16 dport;    /* 60 */
	u16 reserved; /* 62 */
	u8 saddr[16]; /* 64 */
	u8 daddr[16]; /* 80 */
};

_Static_assert(sizeof(struct task_header) == 48, "task_header layout");
_Static_assert(sizeof(struct path_record) == 312, "path_record layout");
_Static_assert(sizeof(struct exit_record) == 56, "exit_record layout");
_Static_assert(sizeof(struct tcp_record) == 96, "tcp_record layout");

/* Who owns a socket, remembered at connect() (the only transition that runs in the owner's
 * context; later ones often run in softirq on behalf of nobody in particular). */
struct owner {
	u64 connect_ns; /* when connect() began */
	u64 cgroup_id;
	u32 pid;
	u32 uid;
	char comm[TASK_COMM_LEN];
};

struct path_prefix {
	u32 len;
	char bytes[PREFIX_LEN];
};

/* Set by the loader before the programs are verified, so unused branches are pruned. */
const volatile u32 filter_flags = 0;
const volatile u32 emit_connect = 0;
const volatile u32 emit_tcp_state = 0;
/* Wake the reader only once this much waits in the ring buffer; below it, the reader's own
 * timer picks records up. Waking it for every record costs more than the record. */
const volatile u64 wakeup_bytes = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23); /* replaced by `ring_buffer_size` at load */
} events SEC(".maps");

/* Records that did not fit in `events`, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct owner);
} sock_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, char[TASK_COMM_LEN]);
	__type(value, u8);
} comm_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u64);
	__type(value, u8);
} cgroup_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u16);
	__type(value, u8);
} port_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PREFIXES);
	__type(key, u32);
	__type(value, struct path_prefix);
} path_filter SEC(".maps");

static __always_inline void *reserve(u64 size)
{
	void *record = bpf_ringbuf_reserve(&events, size, 0);
	if (!record) {
		u32 zero = 0;
		u64 *count = bpf_map_lookup_elem(&lost, &zero);
		if (count)
			(*count)++;
	}
	return record;
}

static __always_inline void submit(void *record)
{
	u64 waiting = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(record, waiting >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static __always_inline bool starts_with(const char *name, const char *prefix, u32 len)
{
	for (u32 i = 0; i < len; i++)
		if (name[i] != prefix[i])
			return false;
	return true;
}

/* A container's cgroup is named after its 64-hex-digit id: `cri-containerd-<id>.scope`,
 * `docker-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, or `<id>` (cgroupfs driver). */
static __always_inline bool is_container_cgroup(struct cgroup *cgrp)
{
	char name[CGROUP_NAME_LEN] = {};
	const char *kn_name = BPF_CORE_READ(cgrp, kn, name);
	if (bpf_probe_read_kernel_str(name, sizeof(name), kn_name) <= 0)
		return false;
	u32 start = 0;
	if (starts_with(name, "cri-containerd-", 15))
		start = 15;
	else if (starts_with(name, "docker-", 7) || starts_with(name, "libpod-", 7))
		start = 7;
	else if (starts_with(name, "crio-", 5))
		start = 5;
	for (u32 i = 0; i < CONTAINER_ID_LEN; i++)
		if (!is_hex(name[(start + i) & (CGROUP_NAME_LEN - 1)]))
			return false;
	char end = name[(start + CONTAINER_ID_LEN) & (CGROUP_NAME_LEN - 1)];
	return end == '\0' || end == '.';
}

/* Whether the cgroup, or one of its ancestors, is one of the configured ones. */
static __always_inline bool in_cgroup_filter(struct cgroup *cgrp)
{
	for (u32 depth = 0; depth < MAX_CGROUP_DEPTH && cgrp; depth++) {
		u64 id = BPF_CORE_READ(cgrp, kn, id);
		if (bpf_map_lookup_elem(&cgroup_filter, &id))
			return true;
		cgrp = BPF_CORE_READ(cgrp, self.parent, cgroup);
	}
	return false;
}

static __always_inline bool process_wanted(struct task_struct *task, char *comm)
{
	if ((filter_flags & FILTER_COMM) && !bpf_map_lookup_elem(&comm_filter, comm))
		return false;
	if (filter_flags & (FILTER_CGROUP | FILTER_CONTAINERS)) {
		struct cgroup *cgrp = BPF_CORE_READ(task, cgroups, dfl_cgrp);
		if ((filter_flags & FILTER_CONTAINERS) && !is_container_cgroup(cgrp))
			return false;
		if ((filter_flags & FILTER_CGROUP) && !in_cgroup_filter(cgrp))
			return false;
	}
	return true;
}

static __always_inline bool ports_wanted(u16 sport, u16 dport)
{
	if (!(filter_flags & FILTER_PORTS))
		return true;
	return bpf_map_lookup_elem(&port_filter, &sport) || bpf_map_lookup_elem(&port_filter, &dport);
}

static __always_inline bool prefix_matches(const struct path_prefix *prefix, const char *path)
{
	for (u32 i = 0; i < PREFIX_LEN; i++) {
		if (i >= prefix->len)
			return true;
		if (prefix->bytes[i] != path[i])
			return false;
	}
	return true;
}

/* Prefixes fill the map from index 0; the first empty one ends the list. */
static __always_inline bool path_wanted(const char *path)
{
	if (!(filter_flags & FILTER_PATH))
		return true;
	for (u32 i = 0; i < MAX_PREFIXES; i++) {
		u32 index = i;
		struct path_prefix *prefix = bpf_map_lookup_elem(&path_filter, &index);
		if (!prefix || prefix->len == 0)
			return false;
		if (prefix_matches(prefix, path))
			return true;
	}
	return false;
}

static __always_inline void fill_current(struct task_header *h, u32 kind, const char *comm)
{
	h->timestamp_ns = bpf_ktime_get_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->kind = kind;
	h->pid = bpf_get_current_pid_tgid() >> 32;
	h->reserved = 0;
	h->uid = (u32)bpf_get_current_uid_gid();
	__builtin_memcpy(h->comm, comm, TASK_COMM_LEN);
}

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	char comm[TASK_COMM_LEN];
	bpf_get_current_comm(comm, sizeof(comm));
	if (!process_wanted(task, comm))
		return 0;
	struct path_record *record = reserve(sizeof(*record));
	if (!record)
		return 0;
	fill_current(&record->h, RECORD_EXEC, comm);
	record->ppid = BPF_CORE_READ(task, real_parent, tgid);
	record->reserved = 0;
	u32 offset = ctx->__data_loc_filename & 0xFFFF;
	if (bpf_probe_read_kernel_str(record->path, sizeof(record->path), (void *)ctx + offset) < 0)
		record->path[0] = '\0';
	submit(record);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if ((u32)pid_tgid != pid_tgid >> 32)
		return 0; /* a thread, not the process */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	char comm[TASK_COMM_LEN];
	bpf_get_current_comm(comm, sizeof(comm));
	if (!process_wanted(task, comm))
		return 0;
	struct exit_record *record = reserve(sizeof(*record));
	if (!record)
		return 0;
	fill_current(&record->h, RECORD_EXIT, comm);
	record->ppid = BPF_CORE_READ(task, real_parent, tgid);
	record->exit_code = BPF_CORE_READ(task, exit_code);
	submit(record);
	return 0;
}

/* The classic oom/mark_victim tracepoint runs in the killer's context and carries only the
 * victim's pid; the BTF tracepoint hands over the victim's task, and with it its cgroup. */
SEC("tp_btf/mark_victim")
int BPF_PROG(handle_oom_kill, struct task_struct *victim, uid_t uid)
{
	char comm[TASK_COMM_LEN];
	BPF_CORE_READ_INTO(&comm, victim, comm);
	if (!process_wanted(victim, comm))
		return 0;
	struct task_header *record = reserve(sizeof(*record));
	if (!record)
		return 0;
	record->timestamp_ns = bpf_ktime_get_ns();
	record->cgroup_id = BPF_CORE_READ(victim, cgroups, dfl_cgrp, kn, id);
	record->kind = RECORD_OOM_KILL;
	record->pid = BPF_CORE_READ(victim, tgid);
	record->reserved = 0;
	record->uid = uid;
	__builtin_memcpy(record->comm, comm, TASK_COMM_LEN);
	submit(record);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int handle_openat(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	char comm[TASK_COMM_LEN];
	bpf_get_current_comm(comm, sizeof(comm));
	if (!process_wanted(task, comm))
		return 0;
	struct path_record *record = reserve(sizeof(*record));
	if (!record)
		return 0;
	const char *path = (const char *)ctx->args[1];
	if (bpf_probe_read_user_str(record->path, sizeof(record->path), path) <= 0 ||
	    !path_wanted(record->path)) {
		bpf_ringbuf_discard(record, 0);
		return 0;
	}
	fill_current(&record->h, RECORD_OPEN, comm);
	record->ppid = 0;
	record->reserved = 0;
	submit(record);
	return 0;
}

static __always_inline void emit_tcp(u64 timestamp_ns, u32 op, s32 error,
				     const struct owner *owner, u16 family, u16 sport, u16 dport,
				     const u8 *saddr, const u8 *daddr)
{
	struct tcp_record *record = reserve(sizeof(*record));
	if (!record)
		return;
	record->h.timestamp_ns = timestamp_ns;
	record->h.kind = RECORD_TCP;
	record->h.reserved = 0;
	if (owner) {
		record->h.cgroup_id = owner->cgroup_id;
		record->h.pid = owner->pid;
		record->h.uid = owner->uid;
		__builtin_memcpy(record->h.comm, owner->comm, TASK_COMM_LEN);
	} else {
		record->h.cgroup_id = 0;
		record->h.pid = 0;
		record->h.uid = 0;
		__builtin_memset(record->h.comm, 0, TASK_COMM_LEN);
	}
	record->op = op;
	record->error = error;
	record->family = family;
	record->sport = sport;
	record->dport = dport;
	record->reserved = 0;
	__builtin_memset(record->saddr, 0, sizeof(record->saddr));
	__builtin_memset(record->daddr, 0, sizeof(record->daddr));
	if (family == AF_INET6) {
		bpf_probe_read_kernel(record->saddr, 16, saddr);
		bpf_probe_read_kernel(record->daddr, 16, daddr);
	} else {
		bpf_probe_read_kernel(record->saddr, 4, saddr);
		bpf_probe_read_kernel(record->daddr, 4, daddr);
	}
	submit(record);
}

/* An event about a socket whose owner was not recorded cannot pass a process filter. */
static __always_inline bool owner_wanted(const struct owner *owner)
{
	return owner || !(filter_flags & PROCESS_FILTERS);
}

SEC("tracepoint/sock/inet_sock_set_state")
int handle_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	int oldstate = ctx->oldstate;
	int newstate = ctx->newstate;
	u64 sk = (u64)ctx->skaddr;
	u16 family = ctx->family;
	u16 sport = ctx->sport;
	u16 dport = ctx->dport;
	const u8 *saddr = family == AF_INET6 ? ctx->saddr_v6 : ctx->saddr;
	const u8 *daddr = family == AF_INET6 ? ctx->daddr_v6 : ctx->daddr;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		/* connect(): the current task owns the socket. The local port is not chosen yet,
		 * so the connect is reported when the handshake ends, stamped with this time. */
		struct owner owner = {};
		bpf_get_current_comm(owner.comm, sizeof(owner.comm));
		if (!process_wanted((struct task_struct *)bpf_get_current_task(), owner.comm))
			return 0;
		owner.connect_ns = bpf_ktime_get_ns();
		owner.cgroup_id = bpf_get_current_cgroup_id();
		owner.pid = bpf_get_current_pid_tgid() >> 32;
		owner.uid = (u32)bpf_get_current_uid_gid();
		bpf_map_update_elem(&sock_owners, &sk, &owner, BPF_ANY);
		return 0;
	}
	struct owner *owner = bpf_map_lookup_elem(&sock_owners, &sk);
	if (oldstate == TCP_SYN_SENT && owner) {
		if (emit_connect && ports_wanted(sport, dport))
			emit_tcp(owner->connect_ns, TCP_OP_CONNECT, 0, owner, family, sport, dport,
				 saddr, daddr);
		if (!emit_tcp_state) {
			bpf_map_delete_elem(&sock_owners, &sk);
			return 0;
		}
	}
	if (!emit_tcp_state || newstate != TCP_CLOSE || oldstate == TCP_LISTEN)
		return 0;
	/* The error that closed the socket: a reset (refused while connecting, reset after), an
	 * ICMP error, or ETIMEDOUT when retransmissions or the SYN gave up. */
	s32 error = BPF_CORE_READ((struct sock *)ctx->skaddr, sk_err);
	u32 op = error == ETIMEDOUT ? TCP_OP_TIMEOUT : error ? TCP_OP_ERROR : TCP_OP_CLOSE;
	if (owner_wanted(owner) && ports_wanted(sport, dport))
		emit_tcp(bpf_ktime_get_ns(), op, error, owner, family, sport, dport, saddr, daddr);
	if (owner)
		bpf_map_delete_elem(&sock_owners, &sk);
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int handle_retransmit(void *ctx)
{
	u64 sk;
	u16 family, sport, dport;
	const u8 *saddr, *daddr;
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb)) {
		struct trace_event_raw_tcp_retransmit_skb *args = ctx;
		sk = (u64)args->skaddr;
		family = args->family;
		sport = args->sport;
		dport = args->dport;
		saddr = family == AF_INET6 ? args->saddr_v6 : args->saddr;
		daddr = family == AF_INET6 ? args->daddr_v6 : args->daddr;
	} else {
		struct trace_event_raw_tcp_event_sk_skb *args = ctx;
		sk = (u64)args->skaddr;
		family = args->family;
		sport = args->sport;
		dport = args->dport;
		saddr = family == AF_INET6 ? args->saddr_v6 : args->saddr;
		daddr = family == AF_INET6 ? args->daddr_v6 : args->daddr;
	}
	struct owner *owner = bpf_map_lookup_elem(&sock_owners, &sk);
	if (owner_wanted(owner) && ports_wanted(sport, dport))
		emit_tcp(bpf_ktime_get_ns(), TCP_OP_RETRANSMIT, 0, owner, family, sport, dport, saddr,
			 daddr);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
