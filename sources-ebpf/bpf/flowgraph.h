/* Structures shared by the kernel programs (flowgraph.bpf.c) and userspace (src/lib.rs, which
 * mirrors them as #[repr(C)] structs). Explicit widths, natural alignment, no implicit padding:
 * every hole is a named field, and the sizes are checked on both sides. */
#ifndef FLOWGRAPH_H
#define FLOWGRAPH_H

/* Roles, as in Pixie's conn_stats trace_role. */
#define FG_ROLE_UNKNOWN 0
#define FG_ROLE_CLIENT 1 /* connect(): seen going CLOSE -> SYN_SENT */
#define FG_ROLE_SERVER 2 /* accept(): passive child socket born in SYN_RECV */

/* fg_sock.flags */
#define FG_F_ESTABLISHED 0x01 /* reached ESTABLISHED */
#define FG_F_TCP_CLOSE 0x02   /* TCP state reached CLOSE (the fd may still be open) */
#define FG_F_DESTROYED 0x04   /* tcp_destroy_sock: no more I/O can happen; export then delete */
#define FG_F_ADOPTED 0x08     /* first seen at a send/recv, not at its birth (pre-existing socket,
                               * or its state was lost): role unknown, counts start late */
#define FG_F_FIN_READ 0x10    /* at the last state change or destroy: the peer's FIN was received
                               * and consumed (tcp_bytes_read includes 1 for it) */

/* Per-socket state, keyed by the socket cookie (__u64). */
struct fg_sock {
	__u64 bytes_sent;          /* sum of sock_send_length ret > 0 */
	__u64 bytes_recv;          /* sum of sock_recv_length ret > 0, MSG_PEEK excluded */
	__u64 tcp_bytes_acked;     /* tcp_sock.bytes_acked at the last state change or destroy */
	__u64 tcp_bytes_received;  /* tcp_sock.bytes_received at the last state change or destroy (payload + FIN) */
	__u64 tcp_bytes_read;      /* bytes the process consumed by any path (recv, splice, ...):
	                            * bytes_received - (rcv_nxt - copied_seq), at the last state change or destroy;
	                            * includes 1 for the FIN once the process read EOF */
	__u64 owner_start_ns;      /* owner's group_leader->start_boottime (ns since boot) */
	__u64 open_ns;             /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) when first seen */
	__u64 close_ns;            /* bpf_ktime_get_ns() at tcp_destroy_sock, 0 while alive */
	__u64 _reserved;           /* was the last send/recv time: too costly on the hot path */
	__u32 tgid;                /* owner: first process-context tgid seen on it, 0 = none yet */
	__u32 foreign_tgid;        /* last other tgid that moved bytes on it, 0 = none */
	__u8 laddr[16];            /* local address: IPv4 in the first 4 bytes when family == 2 */
	__u8 raddr[16];            /* remote address, same convention */
	__u16 family;              /* AF_INET (2) or AF_INET6 (10) */
	__u16 lport;               /* host byte order */
	__u16 rport;               /* host byte order */
	__u8 role;                 /* FG_ROLE_* */
	__u8 flags;                /* FG_F_* */
	__u8 state;                /* last TCP state seen (TCP_ESTABLISHED = 1 ...) */
	__u8 _pad[7];
};

/* What a process was, captured in process context at its first socket event, keyed by tgid:
 * a process that lives 50 ms is gone from /proc by the next export, but not from here. */
#define FG_ARGS_LEN 256
struct fg_proc {
	__u64 start_ns;            /* group_leader->start_boottime, to tell pid reuse apart */
	__u32 args_len;            /* bytes of args used: NUL-separated argv, truncated */
	__u32 _pad;
	char comm[16];             /* task comm, NUL-terminated */
	char args[FG_ARGS_LEN];
};

/* Indexes of the fg_counters array map (__u64 each). */
#define FG_C_MAP_FULL 0        /* socket state insert failed: map full (E2BIG/ENOMEM) */
#define FG_C_UPDATE_FAILED 1   /* socket state insert failed for another reason */
#define FG_C_MISSING_STATE 2   /* I/O on a socket without state: adopted (see FG_F_ADOPTED) */
#define FG_C_LOST_BYTES_EVENTS 3 /* send/recv events dropped for lack of state (bytes lost) */
#define FG_C_FOREIGN_IO 4      /* I/O by a tgid other than the owner (counted to the owner) */
#define FG_C_DESTROY_UNTRACKED 5 /* tcp_destroy_sock on a socket without state (listeners...) */
#define FG_C_CLOSED_UNOWNED 6  /* destroyed with no owner (tgid 0): a server socket closed before
                                * any send/recv, so the exporter cannot attribute it */
#define FG_C_PROC_INSERTED 7   /* fg_procs entries added (successful BPF_NOEXIST inserts) */
#define FG_C_PROC_DELETED 8    /* fg_procs entries deleted by the programs (pid reuse), counted
                                * before the delete; evicted = inserted - deleted - live */
#define FG_C_PROC_INSERT_FAILED 9 /* fg_procs inserts refused (other than -EEXIST) */
#define FG_C_NUM 16

#endif
