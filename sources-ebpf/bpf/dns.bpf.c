// SPDX-License-Identifier: GPL-2.0
/* flowgraph DNS answer filter: a socket filter (BPF_PROG_TYPE_SOCKET_FILTER) attached to an
 * AF_PACKET SOCK_DGRAM socket, so the network header is at offset 0 whatever the link layer.
 * It passes UDP datagrams from source port 53 (IPv4 with any header length, IPv6 without
 * extension headers), cut to FG_DNS_SNAPLEN bytes, and drops everything else, so userspace
 * wakes only for DNS answers (a packet socket would otherwise copy every packet of the host).
 *
 * Socket filters can neither read packet memory directly nor use CO-RE, so this reads with
 * bpf_skb_load_bytes and needs no vmlinux.h types beyond __sk_buff. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "dns.h"

char LICENSE[] SEC("license") = "GPL";

/* vmlinux.h carries types, not macros. */
#define FG_ETH_P_IP 0x0800
#define FG_ETH_P_IPV6 0x86DD
#define FG_IPPROTO_UDP 17
#define FG_PACKET_OUTGOING 4
#define FG_IP_OFFSET_MASK 0x1fff
#define FG_DNS_PORT 53

/* FG_DNS_C_* counters. Shared array with atomic adds: one or two adds per DNS answer. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FG_DNS_C_NUM);
	__type(key, __u32);
	__type(value, __u64);
} fg_dns_counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&fg_dns_counters, &index);
	if (value)
		__sync_fetch_and_add(value, 1);
}

/* Returns how many bytes of the packet to keep: 0 drops it. */
static __always_inline __u32 dns_answer_filter(struct __sk_buff *skb)
{
	__u32 l4;
	__u16 sport;

	/* A packet the host sends is seen again when it arrives (on lo, or at the peer's agent):
	 * keeping only arrivals sees each answer once and counts no answer this host only relays
	 * out. */
	if (skb->pkt_type == FG_PACKET_OUTGOING)
		return 0;
	if (skb->protocol == bpf_htons(FG_ETH_P_IP)) {
		__u8 version_ihl, proto;
		__u16 frag;

		if (bpf_skb_load_bytes(skb, 0, &version_ihl, 1) || (version_ihl >> 4) != 4)
			return 0;
		l4 = (__u32)(version_ihl & 0x0f) * 4;
		if (l4 < 20)
			return 0;
		if (bpf_skb_load_bytes(skb, 9, &proto, 1) || proto != FG_IPPROTO_UDP)
			return 0;
		/* A later fragment has no UDP header: what sits at l4 is payload. */
		if (bpf_skb_load_bytes(skb, 6, &frag, 2) || (bpf_ntohs(frag) & FG_IP_OFFSET_MASK))
			return 0;
	} else if (skb->protocol == bpf_htons(FG_ETH_P_IPV6)) {
		__u8 version, next;

		if (bpf_skb_load_bytes(skb, 0, &version, 1) || (version >> 4) != 6)
			return 0;
		/* Extension headers (fragments included) are not walked: UDP must come first. */
		if (bpf_skb_load_bytes(skb, 6, &next, 1) || next != FG_IPPROTO_UDP)
			return 0;
		l4 = 40;
	} else {
		return 0;
	}
	if (bpf_skb_load_bytes(skb, l4, &sport, 2) || sport != bpf_htons(FG_DNS_PORT))
		return 0;
	count(FG_DNS_C_PASSED);
	if (skb->len > FG_DNS_SNAPLEN) {
		count(FG_DNS_C_TRUNCATED);
		return FG_DNS_SNAPLEN;
	}
	return skb->len;
}

SEC("socket")
int fg_dns_answers(struct __sk_buff *skb)
{
	return dns_answer_filter(skb);
}
