/* tests/netem/loss.bpf.c — a lossy link for the two-host tests, where the
 * kernel has no netem: a tc program (clsact egress, direct action) that
 * drops each packet with probability LOSS_PER_MILLION / 10^6 (default 1 %).
 * Attached on both ends of the veth pair by tests/integration/netns.py. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#ifndef LOSS_PER_MILLION
#define LOSS_PER_MILLION 10000
#endif

/* the helper by number: no libbpf headers needed for one call */
static __u32 (*bpf_get_prandom_u32)(void) = (void *)BPF_FUNC_get_prandom_u32;

__attribute__((section("tc"), used)) int kmig_loss(struct __sk_buff *skb)
{
	(void)skb;
	return bpf_get_prandom_u32() % 1000000u < LOSS_PER_MILLION ? TC_ACT_SHOT : TC_ACT_OK;
}

char _license[] __attribute__((section("license"), used)) = "GPL";
