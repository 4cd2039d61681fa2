/* benchtool: timed readers for the mcorefs benchmark suite.
 *
 *   benchtool read BS FILE...   sequential read() of each file with BS-byte reads
 *   benchtool touch LIST        LIST lines "PATH OFFSET LENGTH": mmap each file once (read-only,
 *                               MAP_SHARED) and read every byte of each range, in list order
 *                               (what a safetensors load does, tensor by tensor)
 * Both print "BYTES SECONDS CHECKSUM" (the checksum keeps the compiler honest).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int do_read(size_t bs, int n, char **files)
{
    char *buf = aligned_alloc(4096, bs);
    uint64_t total = 0, sum = 0;
    double t0 = now();
    for (int i = 0; i < n; i++) {
        int fd = open(files[i], O_RDONLY);
        if (fd < 0) {
            perror(files[i]);
            return 1;
        }
        for (;;) {
            ssize_t r = read(fd, buf, bs);
            if (r < 0) {
                perror(files[i]);
                return 1;
            }
            if (r == 0)
                break;
            total += (uint64_t)r;
            sum += (unsigned char)buf[r - 1];
        }
        close(fd);
    }
    printf("%llu %.6f %llu\n", (unsigned long long)total, now() - t0, (unsigned long long)sum);
    return 0;
}

typedef struct {
    char path[4096];
    const unsigned char *base;
    size_t size;
} mapped;

static int do_touch(const char *list)
{
    FILE *f = fopen(list, "r");
    if (!f) {
        perror(list);
        return 1;
    }
    mapped maps[256];
    int nm = 0;
    char path[4096];
    unsigned long long off, len;
    uint64_t total = 0, sum = 0;
    double t0 = now();
    while (fscanf(f, "%4095s %llu %llu", path, &off, &len) == 3) {
        mapped *m = NULL;
        for (int i = 0; i < nm; i++)
            if (strcmp(maps[i].path, path) == 0)
                m = &maps[i];
        if (!m) {
            if (nm == 256)
                return 1;
            m = &maps[nm++];
            snprintf(m->path, sizeof(m->path), "%s", path);
            int fd = open(path, O_RDONLY);
            struct stat st;
            if (fd < 0 || fstat(fd, &st) != 0) {
                perror(path);
                return 1;
            }
            m->size = (size_t)st.st_size;
            m->base = mmap(NULL, m->size, PROT_READ, MAP_SHARED, fd, 0);
            close(fd);
            if (m->base == MAP_FAILED) {
                perror("mmap");
                return 1;
            }
        }
        if (off + len > m->size)
            return 1;
        const unsigned char *p = m->base + off;
        uint64_t s = 0;
        size_t k = 0;
        for (; k + 8 <= len; k += 8) {
            uint64_t w;
            memcpy(&w, p + k, 8);
            s += w;
        }
        for (; k < len; k++)
            s += p[k];
        sum += s;
        total += len;
    }
    double t = now() - t0;
    printf("%llu %.6f %llu\n", (unsigned long long)total, t, (unsigned long long)sum);
    for (int i = 0; i < nm; i++)
        munmap((void *)maps[i].base, maps[i].size);
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "read") == 0)
        return do_read((size_t)strtoull(argv[2], NULL, 10), argc - 3, argv + 3);
    if (argc == 3 && strcmp(argv[1], "touch") == 0)
        return do_touch(argv[2]);
    fprintf(stderr, "usage: benchtool read BS FILE... | benchtool touch LIST\n");
    return 2;
}
