# Thin wrapper over meson. `make demo` and `make check` are all a newcomer needs.
BUILD ?= build
MESON_OPTS ?=

.PHONY: all deps configure demo check bench bench-converge bench-ring-loss clean

all: configure
	@ninja -C $(BUILD)

deps:
	@scripts/setup-deps.sh

configure:
	@test -f $(BUILD)/build.ninja || meson setup $(BUILD) $(MESON_OPTS) >/dev/null

demo: deps all
	@$(BUILD)/tools/kmig demo

check: deps all
	@scripts/run-tests.sh $(BUILD)

bench: deps all
	@python3 bench/bench.py --build $(BUILD)

# the converge scenario alone: dirty-limit vs none vs QEMU auto-converge
bench-converge: deps all
	@python3 bench/bench.py --build $(BUILD) --scenarios converge

bench-ring-loss: deps all
	@python3 bench/ring_loss.py --build $(BUILD)

clean:
	rm -rf $(BUILD)
