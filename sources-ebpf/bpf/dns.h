/* Constants shared by the DNS answer filter (dns.bpf.c) and userspace (src/dns.rs, which
 * mirrors them). */
#ifndef FLOWGRAPH_DNS_H
#define FLOWGRAPH_DNS_H

/* Bytes of a datagram passed to userspace: a 4096-byte EDNS payload (the largest buffer most
 * resolvers advertise) behind the largest IPv4 header (60) and UDP (8). Longer ones arrive cut
 * short, are counted (FG_DNS_C_TRUNCATED), and fail to parse in userspace. */
#define FG_DNS_SNAPLEN (4096 + 60 + 8)

/* Indexes of the fg_dns_counters array map (__u64 each). */
#define FG_DNS_C_PASSED 0    /* datagrams from UDP port 53 passed to the socket */
#define FG_DNS_C_TRUNCATED 1 /* of those, longer than FG_DNS_SNAPLEN (cut short) */
#define FG_DNS_C_NUM 2

#endif
