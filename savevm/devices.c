/* The non-iterable entries: per vCPU apic/N then cpu/N (KVM wants the
 * LAPIC in place before the TSC deadline MSR and the vCPU events), then
 * pic/0 (master), pic/1 (slave), ioapic/0, pit/0, kvmclock/0, serial/0.
 * Each is a thin adapter over kvm/'s state blobs. */
#include <errno.h>
#include <stdlib.h>

#include "savevm/ram.h"

struct device {
	struct kvm_vm *vm;
	enum kvm_state_kind kind;
	unsigned int instance;
};

static int dev_save(void *opaque, uint8_t *buf, size_t len)
{
	struct device *d = opaque;

	return kvm_state_save(d->vm, d->kind, d->instance, buf, len);
}

static int dev_check(void *opaque, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	struct device *d = opaque;

	return kvm_state_check(d->vm, d->kind, d->instance, buf, len, err, errlen);
}

static int dev_load(void *opaque, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	struct device *d = opaque;

	return kvm_state_load(d->vm, d->kind, d->instance, buf, len, err, errlen);
}

static const struct savevm_ops device_ops = {
	.save_state = dev_save,
	.check_state = dev_check,
	.load_state = dev_load,
};

static int add(struct savevm_registry *reg, struct kvm_vm *vm, const char *name,
	       enum kvm_state_kind kind, unsigned int instance)
{
	struct device *d = malloc(sizeof(*d));

	if (!d)
		return -ENOMEM;
	*d = (struct device){ vm, kind, instance };
	int r = savevm_register(reg, name, instance, 1, false, &device_ops, d);

	if (r)
		free(d);
	return r;
}

int devices_register(struct savevm_registry *reg, struct kvm_vm *vm)
{
	int r = 0;

	for (unsigned int i = 0; !r && i < kvm_vm_nr_vcpus(vm); i++) {
		r = add(reg, vm, "apic", KVM_STATE_APIC, i);
		if (!r)
			r = add(reg, vm, "cpu", KVM_STATE_CPU, i);
	}
	if (!r)
		r = add(reg, vm, "pic", KVM_STATE_PIC, 0);
	if (!r)
		r = add(reg, vm, "pic", KVM_STATE_PIC, 1);
	if (!r)
		r = add(reg, vm, "ioapic", KVM_STATE_IOAPIC, 0);
	if (!r)
		r = add(reg, vm, "pit", KVM_STATE_PIT, 0);
	if (!r)
		r = add(reg, vm, "kvmclock", KVM_STATE_KVMCLOCK, 0);
	if (!r)
		r = add(reg, vm, "serial", KVM_STATE_SERIAL, 0);
	return r;
}

void devices_free(struct savevm_registry *reg)
{
	for (size_t i = 0; i < savevm_registry_count(reg); i++) {
		struct savevm_entry *e = savevm_registry_at(reg, i);

		if (e->ops == &device_ops)
			free(e->opaque);
	}
}
