# Thin wrapper over meson. `make demo` and `make check` are all a newcomer needs.
BUILD ?= build
# the same tree built by clang with ASan+UBSan everywhere and the fuzz
# harnesses as libFuzzer binaries: make check runs every test there too
SAN_BUILD ?= build-san
MESON_OPTS ?=
# make fuzz FUZZ_SECONDS=600: how long each harness runs
FUZZ_SECONDS ?= 60

.PHONY: all san deps configure san-configure demo check check-vm fuzz bench bench-converge bench-ring-loss clean

all: configure
	@ninja -C $(BUILD)

deps:
	@scripts/setup-deps.sh

configure:
	@test -f $(BUILD)/build.ninja || meson setup $(BUILD) $(MESON_OPTS) >/dev/null

san-configure:
	@test -f $(SAN_BUILD)/build.ninja || CC=clang meson setup $(SAN_BUILD) -Dfuzz=true \
		-Db_sanitize=address,undefined -Db_lundef=false $(MESON_OPTS) >/dev/null

san: san-configure
	@ninja -C $(SAN_BUILD)

demo: deps all
	@$(BUILD)/tools/kmig demo

check: deps all san
	@scripts/run-tests.sh $(BUILD) $(SAN_BUILD)

# every test of $(BUILD) inside a VM that has /dev/kvm, kTLS and netem, for
# hosts without them (scripts/kvm-vm.sh: emulated, slow, not a benchmark)
check-vm: deps all
	@scripts/kvm-vm.sh -- scripts/run-tests.sh $(BUILD)

fuzz: deps san
	@scripts/fuzz.sh $(SAN_BUILD) $(FUZZ_SECONDS)

bench: deps all
	@python3 bench/bench.py --build $(BUILD)

# the converge scenario alone: dirty-limit vs none vs QEMU auto-converge
bench-converge: deps all
	@python3 bench/bench.py --build $(BUILD) --scenarios converge

bench-ring-loss: deps all
	@python3 bench/ring_loss.py --build $(BUILD)

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
