#include <errno.h>
#include <stdlib.h>

#include "kvm/bitmap.h"

_Static_assert(sizeof(unsigned long) * 8 == DIRTY_BITMAP_WORD_BITS, "64-bit words");

#define BITS_PER_WORD (8 * sizeof(unsigned long))

static uint64_t nwords(const struct dirty_bitmap *b)
{
	return (b->nbits + BITS_PER_WORD - 1) / BITS_PER_WORD;
}

int dirty_bitmap_init(struct dirty_bitmap *b, uint64_t nbits)
{
	b->nbits = nbits;
	atomic_init(&b->count, 0);
	b->words = calloc(nwords(b) ? nwords(b) : 1, sizeof(*b->words));
	return b->words ? 0 : -ENOMEM;
}

void dirty_bitmap_fini(struct dirty_bitmap *b)
{
	free(b->words);
	b->words = NULL;
}

bool dirty_bitmap_set(struct dirty_bitmap *b, uint64_t bit)
{
	unsigned long m = 1ul << (bit % BITS_PER_WORD);
	unsigned long old = atomic_fetch_or(&b->words[bit / BITS_PER_WORD], m);

	if (old & m)
		return false;
	atomic_fetch_add(&b->count, 1);
	return true;
}

void dirty_bitmap_set_range(struct dirty_bitmap *b, uint64_t first, uint64_t end)
{
	if (end > b->nbits)
		end = b->nbits;
	while (first < end) {
		unsigned int lo = (unsigned int)(first % BITS_PER_WORD);
		uint64_t n = end - first < BITS_PER_WORD - lo ? end - first : BITS_PER_WORD - lo;
		unsigned long m = (n == BITS_PER_WORD ? ~0ul : ((1ul << n) - 1)) << lo;
		unsigned long old = atomic_fetch_or(&b->words[first / BITS_PER_WORD], m);

		atomic_fetch_add(&b->count, (uint64_t)__builtin_popcountl(m & ~old));
		first += n;
	}
}

bool dirty_bitmap_test_and_clear(struct dirty_bitmap *b, uint64_t bit)
{
	unsigned long m = 1ul << (bit % BITS_PER_WORD);
	unsigned long old = atomic_fetch_and(&b->words[bit / BITS_PER_WORD], ~m);

	if (!(old & m))
		return false;
	atomic_fetch_sub(&b->count, 1);
	return true;
}

uint64_t dirty_bitmap_find_next(struct dirty_bitmap *b, uint64_t bit)
{
	while (bit < b->nbits) {
		unsigned long w = atomic_load_explicit(&b->words[bit / BITS_PER_WORD], memory_order_relaxed);

		w &= ~0ul << (bit % BITS_PER_WORD);
		if (w) {
			bit = bit / BITS_PER_WORD * BITS_PER_WORD + (uint64_t)__builtin_ctzl(w);
			return bit < b->nbits ? bit : b->nbits;
		}
		bit = (bit / BITS_PER_WORD + 1) * BITS_PER_WORD;
	}
	return b->nbits;
}

uint64_t dirty_bitmap_count(struct dirty_bitmap *b)
{
	return atomic_load(&b->count);
}

void dirty_bitmap_clear_all(struct dirty_bitmap *b)
{
	for (uint64_t w = 0; w < nwords(b); w++)
		atomic_store(&b->words[w], 0ul);
	atomic_store(&b->count, 0);
}

uint64_t dirty_bitmap_nwords(const struct dirty_bitmap *b)
{
	return nwords(b);
}

unsigned long dirty_bitmap_take_word(struct dirty_bitmap *b, uint64_t w)
{
	/* a plain load first: most words of a later pass are clean, and an
	 * exchange on them would dirty their cache lines for nothing */
	if (!atomic_load_explicit(&b->words[w], memory_order_relaxed))
		return 0;
	unsigned long old = atomic_exchange(&b->words[w], 0ul);

	if (old)
		atomic_fetch_sub(&b->count, (uint64_t)__builtin_popcountl(old));
	return old;
}

int dirty_observer_init(struct dirty_observer *o, uint64_t nbits, unsigned int nr_vcpus)
{
	o->nr_vcpus = nr_vcpus;
	o->other = 0;
	o->per_vcpu = calloc(nr_vcpus ? nr_vcpus : 1, sizeof(*o->per_vcpu));
	if (!o->per_vcpu)
		return -ENOMEM;
	if (dirty_bitmap_init(&o->seen, nbits)) {
		free(o->per_vcpu);
		o->per_vcpu = NULL;
		return -ENOMEM;
	}
	return 0;
}

void dirty_observer_note(struct dirty_observer *o, uint64_t bit, uint32_t vcpu)
{
	if (bit >= o->seen.nbits || !dirty_bitmap_set(&o->seen, bit))
		return;
	if (vcpu < o->nr_vcpus)
		o->per_vcpu[vcpu]++;
	else
		o->other++;
}

uint64_t dirty_observer_total(const struct dirty_observer *o)
{
	uint64_t total = o->other;

	for (unsigned int i = 0; i < o->nr_vcpus; i++)
		total += o->per_vcpu[i];
	return total;
}

void dirty_observer_fini(struct dirty_observer *o)
{
	dirty_bitmap_fini(&o->seen);
	free(o->per_vcpu);
	o->per_vcpu = NULL;
}
