/* A main() for the fuzz harnesses where libFuzzer is not linked (gcc
 * builds): runs each file named, or each file in each directory named,
 * through LLVMFuzzerTestOneInput once.  The seed corpora replay this way
 * in every build, so a harness or a seed that stops working fails
 * `make check` even without clang. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	struct stat st;

	if (!f || fstat(fileno(f), &st)) {
		fprintf(stderr, "replay: cannot open %s\n", path);
		if (f)
			fclose(f);
		return 1;
	}
	uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;

	fclose(f);
	if (!buf || n != (size_t)st.st_size) {
		fprintf(stderr, "replay: cannot read %s\n", path);
		free(buf);
		return 1;
	}
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	return 0;
}

static int run_dir(const char *dir, unsigned int *count)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort), bad = 0;

	if (n < 0) {
		fprintf(stderr, "replay: cannot list %s\n", dir);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		if (!stat(path, &st) && S_ISREG(st.st_mode)) {
			bad |= run_file(path);
			++*count;
		}
		free(names[i]);
	}
	free(names);
	return bad;
}

int main(int argc, char **argv)
{
	unsigned int count = 0;
	int bad = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st)) {
			fprintf(stderr, "replay: no such file or directory: %s\n", argv[i]);
			return 1;
		}
		if (S_ISDIR(st.st_mode)) {
			bad |= run_dir(argv[i], &count);
		} else {
			bad |= run_file(argv[i]);
			count++;
		}
	}
	if (!count) {
		fprintf(stderr, "replay: no input\n");
		return 1;
	}
	printf("replay: %u inputs, each ran through the harness without a failed check\n", count);
	return bad;
}
