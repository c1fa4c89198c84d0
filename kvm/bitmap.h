/* kvm/bitmap.h — the dirty bitmap: one bit per page of guest RAM, set by
 * harvesters and cleared by the sender on different threads, so every
 * update is atomic and the count of set bits is kept exact alongside. */
#ifndef KMIG_KVM_BITMAP_H
#define KMIG_KVM_BITMAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct dirty_bitmap {
	_Atomic(unsigned long) *words;
	uint64_t nbits;
	_Atomic uint64_t count;
};

int dirty_bitmap_init(struct dirty_bitmap *b, uint64_t nbits);
void dirty_bitmap_fini(struct dirty_bitmap *b);
/* Returns true if the bit was clear. */
bool dirty_bitmap_set(struct dirty_bitmap *b, uint64_t bit);
/* Sets [first, end). */
void dirty_bitmap_set_range(struct dirty_bitmap *b, uint64_t first, uint64_t end);
bool dirty_bitmap_test_and_clear(struct dirty_bitmap *b, uint64_t bit);
/* First set bit at or after bit, or nbits. */
uint64_t dirty_bitmap_find_next(struct dirty_bitmap *b, uint64_t bit);
uint64_t dirty_bitmap_count(struct dirty_bitmap *b);
/* Words of DIRTY_BITMAP_WORD_BITS bits; bit i of word w is page
 * w * DIRTY_BITMAP_WORD_BITS + i. */
#define DIRTY_BITMAP_WORD_BITS 64u
uint64_t dirty_bitmap_nwords(const struct dirty_bitmap *b);
/* Test-and-clear a whole word at once: returns the bits that were set.
 * One atomic exchange for up to 64 pages, where a walk that clears bit by
 * bit pays two atomics a page (and, with several walkers, bounces the
 * count's cache line for each). */
unsigned long dirty_bitmap_take_word(struct dirty_bitmap *b, uint64_t w);
void dirty_bitmap_clear_all(struct dirty_bitmap *b);

/* Distinct pages in a window (calc-dirty-rate): each page noted counts
 * once, for the vCPU that brought it first; vcpu >= nr_vcpus (no ring:
 * the bitmap backend, a resync) counts in other.  One writer at a time. */
struct dirty_observer {
	struct dirty_bitmap seen;
	unsigned int nr_vcpus;
	uint64_t *per_vcpu;
	uint64_t other;
};

int dirty_observer_init(struct dirty_observer *o, uint64_t nbits, unsigned int nr_vcpus);
void dirty_observer_note(struct dirty_observer *o, uint64_t bit, uint32_t vcpu);
uint64_t dirty_observer_total(const struct dirty_observer *o);
void dirty_observer_fini(struct dirty_observer *o);

#endif
