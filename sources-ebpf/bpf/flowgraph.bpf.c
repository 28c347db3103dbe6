// SPDX-License-Identifier: GPL-2.0
/* flowgraph kernel programs: exact per-socket TCP byte counters with the owning process.
 *
 * Attached as BTF-enabled raw tracepoints (tp_btf) to the same kernel tracepoints a classic
 * tracepoint program would use (sock:sock_send_length, sock:sock_recv_length,
 * sock:inet_sock_set_state, tcp:tcp_destroy_sock). tp_btf rather than classic tracepoints because
 * the state is keyed by the socket cookie: bpf_get_socket_cookie() needs a typed (BTF) socket
 * pointer, which only tp_btf gives (a classic tracepoint's `sk` is a plain number, and the
 * cookie stored in the socket is assigned lazily, so reading it is 0 for most sockets). tp_btf
 * also needs no tracefs and skips the classic tracepoint's record formatting.
 *
 * Keyed by cookie, never by the struct sock pointer: pointers are reused by later connections.
 *
 * Each program is a thin entry calling one static __always_inline function. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "flowgraph.h"

char LICENSE[] SEC("license") = "GPL";

#define FG_AF_INET 2
#define FG_AF_INET6 10
#define FG_MSG_PEEK 2
#define FG_EEXIST 17
#define FG_ENOMEM 12
#define FG_E2BIG 7

/* Socket state by cookie. A plain (preallocated) hash rather than an LRU hash: an LRU map evicts
 * silently, and an evicted socket's cumulative counters would restart from zero when it moves
 * bytes again; a full hash map refuses the insert, which is counted (FG_C_MAP_FULL), and the
 * sockets already tracked stay exact. Userspace deletes destroyed sockets after exporting them.
 * max_entries is overridden at load time. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct fg_sock);
} fg_socks SEC(".maps");

/* Loss and diagnostic counters, FG_C_* indexes. Rare events: a shared array with atomic adds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FG_C_NUM);
	__type(key, __u32);
	__type(value, __u64);
} fg_counters SEC(".maps");

/* Process descriptions by tgid (struct fg_proc). LRU: losing an old process's entry only means
 * userspace falls back to /proc for it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct fg_proc);
} fg_procs SEC(".maps");

/* Scratch space to build a struct fg_proc (too big for the 512-byte BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fg_proc);
} fg_proc_scratch SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&fg_counters, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline bool is_tcp_inet(const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	return sk->sk_protocol == IPPROTO_TCP && (family == FG_AF_INET || family == FG_AF_INET6);
}

static __always_inline void read_addrs(struct fg_sock *s, const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;

	s->family = family;
	s->lport = sk->__sk_common.skc_num;
	s->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (family == FG_AF_INET) {
		__u32 d = sk->__sk_common.skc_daddr;
		__u32 l = sk->__sk_common.skc_rcv_saddr;
		__builtin_memset(s->raddr, 0, sizeof(s->raddr));
		__builtin_memset(s->laddr, 0, sizeof(s->laddr));
		__builtin_memcpy(s->raddr, &d, 4);
		__builtin_memcpy(s->laddr, &l, 4);
	} else {
		BPF_CORE_READ_INTO(&s->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&s->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	}
}

/* The kernel's own TCP counters: a cross-check for paths the socket-layer tracepoints miss. */
static __always_inline void read_tcp_counters(struct fg_sock *s, struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (tp) {
		s->tcp_bytes_acked = tp->bytes_acked;
		s->tcp_bytes_received = tp->bytes_received;
		/* rcv_nxt - copied_seq: received but not yet consumed (< 4 GiB, u32 arithmetic). */
		__u32 unread = tp->rcv_nxt - tp->copied_seq;
		s->tcp_bytes_read = tp->bytes_received - unread;
		/* SOCK_DONE: tcp_fin() processed the peer's FIN (it counts 1 in bytes_received).
		 * Nothing left unread then means the process consumed it too (read EOF), so
		 * tcp_bytes_read holds payload + 1; userspace subtracts it. */
		if (unread == 0 && (sk->__sk_common.skc_flags & (1UL << SOCK_DONE)))
			s->flags |= FG_F_FIN_READ;
		else
			s->flags &= ~FG_F_FIN_READ;
	}
}

/* Records the current process's comm and arguments once per (tgid, start time). Process
 * context only: the arguments are read from its own memory.
 *
 * fg_procs is an LRU map, which evicts silently. To count evictions anyway, every entry the
 * programs add is counted (FG_C_PROC_INSERTED, BPF_NOEXIST so a race with another CPU adds one
 * entry, counted once) and every entry they remove (FG_C_PROC_DELETED, a reused pid: delete,
 * then insert, never an update in place, which would pop a node and could evict another
 * entry uncounted): userspace derives evictions = inserted - deleted - live entries. */
static __always_inline void note_process(struct task_struct *task, __u32 tgid, __u64 start_ns)
{
	struct fg_proc *known = bpf_map_lookup_elem(&fg_procs, &tgid);
	if (known) {
		if (known->start_ns == start_ns)
			return;
		/* The pid was reused. Counted before the delete: a count that races with an
		 * eviction of the same entry can only make the eviction figure lower, never higher. */
		count(FG_C_PROC_DELETED);
		bpf_map_delete_elem(&fg_procs, &tgid);
	}
	__u32 zero = 0;
	struct fg_proc *p = bpf_map_lookup_elem(&fg_proc_scratch, &zero);
	if (!p)
		return;
	p->start_ns = start_ns;
	p->args_len = 0;
	bpf_get_current_comm(p->comm, sizeof(p->comm));
	struct mm_struct *mm = task->mm;
	if (mm) {
		unsigned long start = mm->arg_start;
		unsigned long len = mm->arg_end - start;
		if (len > FG_ARGS_LEN)
			len = FG_ARGS_LEN;
		if (len > 0 && bpf_probe_read_user(p->args, len, (void *)start) == 0)
			p->args_len = len;
	}
	long err = bpf_map_update_elem(&fg_procs, &tgid, p, BPF_NOEXIST);
	if (err == 0)
		count(FG_C_PROC_INSERTED);
	else if (err != -FG_EEXIST)
		count(FG_C_PROC_INSERT_FAILED);
}

/* Owner identity, only ever called in process context. */
static __always_inline void set_owner(struct fg_sock *s, __u32 tgid)
{
	struct task_struct *task = bpf_get_current_task_btf();
	s->tgid = tgid;
	s->owner_start_ns = task->group_leader->start_boottime;
	note_process(task, tgid, s->owner_start_ns);
}

/* Inserts fresh state for sk; returns the map's copy, or NULL (counted) when the map refuses. */
static __always_inline struct fg_sock *insert(__u64 cookie, struct fg_sock *fresh)
{
	long err = bpf_map_update_elem(&fg_socks, &cookie, fresh, BPF_NOEXIST);
	if (err && err != -FG_EEXIST) {
		count(err == -FG_E2BIG || err == -FG_ENOMEM ? FG_C_MAP_FULL : FG_C_UPDATE_FAILED);
		return NULL;
	}
	/* On -EEXIST another CPU inserted it first: use theirs. */
	return bpf_map_lookup_elem(&fg_socks, &cookie);
}

static __always_inline int on_io(struct sock *sk, int ret, int flags, bool is_send)
{
	if (ret <= 0 || !sk)
		return 0;
	if (!is_send && (flags & FG_MSG_PEEK))
		return 0;
	if (!is_tcp_inet(sk))
		return 0;

	__u64 cookie = bpf_get_socket_cookie(sk);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct fg_sock *s = bpf_map_lookup_elem(&fg_socks, &cookie);

	if (!s) {
		struct fg_sock fresh = {};
		count(FG_C_MISSING_STATE);
		fresh.flags = FG_F_ADOPTED;
		fresh.state = sk->__sk_common.skc_state;
		fresh.open_ns = bpf_ktime_get_ns();
		read_addrs(&fresh, sk);
		set_owner(&fresh, tgid);
		s = insert(cookie, &fresh);
		if (!s) {
			count(FG_C_LOST_BYTES_EVENTS);
			return 0;
		}
	}
	if (s->tgid == 0)
		set_owner(s, tgid);
	else if (s->tgid != tgid) {
		s->foreign_tgid = tgid;
		count(FG_C_FOREIGN_IO);
	}
	/* A passive socket's addresses are set after its SYN_RECV birth: fill them late. */
	if (s->rport == 0)
		read_addrs(s, sk);
	/* The hot path: one lookup and one atomic add. The kernel's own TCP counters are read at
	 * state changes and at destroy only (exact at close); reading them here, with the clock,
	 * cost about a third of each run (docs/BENCHMARKS.md). */
	if (is_send)
		__sync_fetch_and_add(&s->bytes_sent, (__u64)ret);
	else
		__sync_fetch_and_add(&s->bytes_recv, (__u64)ret);
	return 0;
}

static __always_inline int on_state(struct sock *sk, int oldstate, int newstate)
{
	if (!sk || !is_tcp_inet(sk))
		return 0;
	/* Listeners carry no bytes: not tracked. (A passive child is cloned from its listener and
	 * reports LISTEN -> SYN_RECV; a listener's own close, LISTEN -> CLOSE, finds no state.) */
	if (newstate == TCP_LISTEN)
		return 0;

	__u64 cookie = bpf_get_socket_cookie(sk);
	struct fg_sock *s = bpf_map_lookup_elem(&fg_socks, &cookie);

	if (!s) {
		struct fg_sock fresh = {};
		if (newstate == TCP_SYN_SENT) {
			/* connect(): process context, the caller owns the socket. */
			fresh.role = FG_ROLE_CLIENT;
			set_owner(&fresh, bpf_get_current_pid_tgid() >> 32);
		} else if (newstate == TCP_SYN_RECV) {
			/* Passive child socket, born in softirq: the current task is not the owner;
			 * the owner is filled at its first send/recv. */
			fresh.role = FG_ROLE_SERVER;
		} else if (newstate == TCP_CLOSE) {
			/* Closing a socket never seen alive: nothing to report. */
			return 0;
		} else {
			/* Alive before we attached (or its state was lost): role unknown. */
			fresh.flags = FG_F_ADOPTED | (newstate == TCP_ESTABLISHED ? FG_F_ESTABLISHED : 0);
			count(FG_C_MISSING_STATE);
		}
		fresh.open_ns = bpf_ktime_get_ns();
		fresh.state = newstate;
		read_addrs(&fresh, sk);
		insert(cookie, &fresh);
		return 0;
	}

	s->state = newstate;
	if (newstate == TCP_ESTABLISHED)
		s->flags |= FG_F_ESTABLISHED;
	if (newstate == TCP_CLOSE) {
		s->flags |= FG_F_TCP_CLOSE;
	} else {
		/* Addresses may have been set since the socket's birth (passive side). */
		read_addrs(s, sk);
	}
	read_tcp_counters(s, sk);
	return 0;
}

static __always_inline int on_destroy(struct sock *sk)
{
	if (!sk || !is_tcp_inet(sk))
		return 0;
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct fg_sock *s = bpf_map_lookup_elem(&fg_socks, &cookie);
	if (!s) {
		count(FG_C_DESTROY_UNTRACKED);
		return 0;
	}
	read_tcp_counters(s, sk);
	s->close_ns = bpf_ktime_get_ns();
	s->flags |= FG_F_DESTROYED;
	/* Never moved a byte through send/recv, so no owner: the exporter cannot report it. */
	if (s->tgid == 0)
		count(FG_C_CLOSED_UNOWNED);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(fg_sock_send_length, struct sock *sk, int ret, int flags)
{
	return on_io(sk, ret, flags, true);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(fg_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return on_io(sk, ret, flags, false);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(fg_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate);
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(fg_tcp_destroy_sock, struct sock *sk)
{
	return on_destroy(sk);
}
