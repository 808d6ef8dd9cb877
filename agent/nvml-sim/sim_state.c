/*
 * The simulation's state: settings found beside the library, the GPUs' identities,
 * the value model, and the fault file re-read while running.
 *
 * All state is static in this copy of the library. vigil-agent writes one copy per
 * simulated node, and dlopen gives each file its own instance, so nodes simulated in
 * one process do not share GPUs.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sim_internal.h"

pthread_mutex_t sim_lock = PTHREAD_MUTEX_INITIALIZER;
int sim_init_count;
unsigned int sim_gpu_count;
struct sim_gpu sim_gpus[SIM_MAX_GPUS];
struct fault_state sim_faults;
struct sim_event_set *sim_sets;

static int configured;
static char faults_path[4096];
static char seed[256];

/* What the fault file looked like when last read, to notice a rewrite (in place or by
 * rename: the inode, size and both times are compared). */
static struct {
    int known;
    int exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct timespec ctime;
} faults_seen;
static double faults_checked_at = -1.0;

/* A DGX H100's GPU bus numbers, so the ids look like the real machine's. */
static const unsigned int BUS_IDS[8] = {0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb};

double sim_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long fnv1a(const char *s, unsigned long long h) {
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static unsigned long long splitmix(unsigned long long *state) {
    unsigned long long z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ')) s[--n] = '\0';
}

/* Reads `<dir of this library>/nvml-sim.conf`; returns 0 when it was there. */
static int read_config_beside_library(void) {
    Dl_info info;
    /* Any object of this library locates it; a data object avoids casting a
     * function pointer. */
    if (dladdr((const void *)&configured, &info) == 0 || info.dli_fname == NULL) return -1;
    char path[4096];
    snprintf(path, sizeof(path), "%s", info.dli_fname);
    char *slash = strrchr(path, '/');
    if (slash) slash[1] = '\0';
    else path[0] = '\0';
    strncat(path, "nvml-sim.conf", sizeof(path) - strlen(path) - 1);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4608];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        chomp(line);
        if (line[0] == '\0' || line[0] == '#') continue;
        char *eq = strchr(line, '=');
        if (!eq) {
            fprintf(stderr, "nvml-sim: %s:%d: expected key=value\n", path, lineno);
            continue;
        }
        *eq = '\0';
        const char *value = eq + 1;
        if (strcmp(line, "gpus") == 0) sim_gpu_count = (unsigned int)strtoul(value, NULL, 10);
        else if (strcmp(line, "faults") == 0) snprintf(faults_path, sizeof(faults_path), "%s", value);
        else if (strcmp(line, "seed") == 0) snprintf(seed, sizeof(seed), "%s", value);
        else fprintf(stderr, "nvml-sim: %s:%d: unknown key '%s'\n", path, lineno, line);
    }
    fclose(f);
    return 0;
}

static void read_config_from_env(void) {
    const char *gpus = getenv("VIGIL_NVML_SIM_GPUS");
    const char *faults = getenv("VIGIL_NVML_SIM_FAULTS");
    const char *node = getenv("VIGIL_NVML_SIM_SEED");
    sim_gpu_count = gpus ? (unsigned int)strtoul(gpus, NULL, 10) : 8;
    if (faults) snprintf(faults_path, sizeof(faults_path), "%s", faults);
    if (node) snprintf(seed, sizeof(seed), "%s", node);
    else if (gethostname(seed, sizeof(seed) - 1) != 0) snprintf(seed, sizeof(seed), "localhost");
}

void sim_configure(void) {
    if (configured) return;
    configured = 1;
    if (read_config_beside_library() != 0) read_config_from_env();
    if (sim_gpu_count > SIM_MAX_GPUS) {
        fprintf(stderr, "nvml-sim: %u GPUs asked for, simulating %d\n", sim_gpu_count, SIM_MAX_GPUS);
        sim_gpu_count = SIM_MAX_GPUS;
    }
    double now = sim_now_s();
    for (unsigned int i = 0; i < sim_gpu_count; i++) {
        struct sim_gpu *g = &sim_gpus[i];
        char idx[32];
        snprintf(idx, sizeof(idx), "/gpu%u", i);
        unsigned long long st = fnv1a(idx, fnv1a(seed, 0xcbf29ce484222325ULL));
        unsigned long long a = splitmix(&st), b = splitmix(&st);
        g->index = i;
        snprintf(g->uuid, sizeof(g->uuid), "GPU-%08llx-%04llx-%04llx-%04llx-%012llx",
                 a >> 32, (a >> 16) & 0xffff, a & 0xffff, b >> 48, b & 0xffffffffffffULL);
        snprintf(g->serial, sizeof(g->serial), "1654%09llu", splitmix(&st) % 1000000000ULL);
        g->domain = i / 8;
        g->bus = BUS_IDS[i % 8];
        snprintf(g->bus_id, sizeof(g->bus_id), "%08X:%02X:00.0", g->domain, g->bus);
        g->phase = (double)(splitmix(&st) % 6283) / 1000.0;
        /* As if the node had been up a few days: energy and error history exist. */
        g->energy_mj = 1.0e11 + (double)(splitmix(&st) % 50000000000ULL);
        g->ecc_sbe_agg_base = splitmix(&st) % 4;
        g->pcie_replay_base = splitmix(&st) % 3;
        g->last_update_s = now;
    }
}

nvmlReturn_t sim_leave(nvmlReturn_t rc) {
    pthread_mutex_unlock(&sim_lock);
    return rc;
}

nvmlReturn_t sim_enter(nvmlDevice_t device) {
    pthread_mutex_lock(&sim_lock);
    if (sim_init_count == 0) return sim_leave(NVML_ERROR_UNINITIALIZED);
    /* Compared as integers: a foreign pointer is not an error to compare. */
    uintptr_t p = (uintptr_t)device, first = (uintptr_t)&sim_gpus[0];
    if (p < first || p >= first + sim_gpu_count * sizeof(struct sim_gpu) ||
        (p - first) % sizeof(struct sim_gpu) != 0)
        return sim_leave(NVML_ERROR_INVALID_ARGUMENT);
    sim_refresh_faults();
    if (sim_is_lost(device)) return sim_leave(NVML_ERROR_GPU_IS_LOST);
    sim_advance(device);
    return NVML_SUCCESS;
}

/* ---- fault file ---------------------------------------------------------------- */

static void replace_faults(struct fault_state *next) {
    faults_free(&sim_faults);
    sim_faults = *next;
}

void sim_refresh_faults(void) {
    if (faults_path[0] == '\0') return;
    double now = sim_now_s();
    if (faults_checked_at >= 0 && now - faults_checked_at < 0.1) return;
    faults_checked_at = now;

    struct stat st;
    if (stat(faults_path, &st) != 0) {
        if (!faults_seen.known || faults_seen.exists) {
            /* No file means no faults; already-delivered Xids stay delivered. */
            struct fault_state empty;
            memset(&empty, 0, sizeof(empty));
            replace_faults(&empty);
        }
        faults_seen.known = 1;
        faults_seen.exists = 0;
        return;
    }
    if (faults_seen.known && faults_seen.exists && faults_seen.dev == st.st_dev &&
        faults_seen.ino == st.st_ino && faults_seen.size == st.st_size &&
        faults_seen.mtime.tv_sec == st.st_mtim.tv_sec &&
        faults_seen.mtime.tv_nsec == st.st_mtim.tv_nsec &&
        faults_seen.ctime.tv_sec == st.st_ctim.tv_sec && faults_seen.ctime.tv_nsec == st.st_ctim.tv_nsec)
        return;
    faults_seen.known = 1;
    faults_seen.exists = 1;
    faults_seen.dev = st.st_dev;
    faults_seen.ino = st.st_ino;
    faults_seen.size = st.st_size;
    faults_seen.mtime = st.st_mtim;
    faults_seen.ctime = st.st_ctim;

    FILE *f = fopen(faults_path, "r");
    if (!f) {
        fprintf(stderr, "nvml-sim: %s: %s; keeping the last faults\n", faults_path, strerror(errno));
        return;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *text = malloc(cap);
    if (!text) {
        fclose(f);
        return;
    }
    size_t n;
    while ((n = fread(text + len, 1, cap - 1 - len, f)) > 0) {
        len += n;
        if (len == cap - 1) {
            char *grown = realloc(text, cap * 2);
            if (!grown) break;
            text = grown;
            cap *= 2;
        }
    }
    fclose(f);
    text[len] = '\0';

    struct fault_state next;
    int err_line = 0;
    char err[256];
    if (faults_parse(text, &next, &err_line, err, sizeof(err)) != 0) {
        fprintf(stderr, "nvml-sim: %s:%d: %s; keeping the last good faults\n", faults_path,
                err_line, err);
    } else {
        replace_faults(&next);
    }
    free(text);
}

/* ---- value model ------------------------------------------------------------------ */

const struct gpu_fault *sim_fault(const struct sim_gpu *g) {
    return &sim_faults.gpu[g->index];
}

int sim_is_lost(const struct sim_gpu *g) {
    const struct gpu_fault *f = sim_fault(g);
    return f->present && f->has_lost && f->lost;
}

static double elapsed(void) {
    static double start = -1.0;
    if (start < 0) start = sim_now_s();
    return sim_now_s() - start;
}

unsigned int sim_utilization(const struct sim_gpu *g) {
    const struct gpu_fault *f = sim_fault(g);
    if (f->has_utilization) return (unsigned int)f->utilization_pct;
    double t = elapsed();
    double u = 60.0 + 30.0 * sin(t / 47.0 + g->phase) + 6.0 * sin(t / 7.3 + 2.0 * g->phase);
    if (u < 0) u = 0;
    if (u > 100) u = 100;
    return (unsigned int)lround(u);
}

unsigned int sim_temperature(const struct sim_gpu *g) {
    const struct gpu_fault *f = sim_fault(g);
    if (f->has_temperature) return (unsigned int)f->temperature_c;
    double t = elapsed();
    return (unsigned int)lround(36.0 + sim_utilization(g) * 0.3 + 1.5 * sin(t / 11.0 + g->phase));
}

double sim_power_w(const struct sim_gpu *g) {
    const struct gpu_fault *f = sim_fault(g);
    if (f->has_power) return (double)f->power_w;
    double t = elapsed();
    return 72.0 + sim_utilization(g) * 5.1 + 6.0 * sin(t / 5.0 + g->phase);
}

unsigned long long sim_throttle_mask(const struct sim_gpu *g) {
    const struct gpu_fault *f = sim_fault(g);
    if (f->has_throttle) return f->throttle_mask;
    return sim_utilization(g) < 5 ? REASON_GPU_IDLE : 0;
}

/* Advances the integrals (energy, violation time) to now; called on every device call
 * so they rise with the power and throttling that were in effect. */
void sim_advance(struct sim_gpu *g) {
    double now = sim_now_s();
    double dt = now - g->last_update_s;
    if (dt <= 0) return;
    g->last_update_s = now;
    g->energy_mj += sim_power_w(g) * dt * 1000.0;
    unsigned long long mask = sim_throttle_mask(g);
    if (mask & (REASON_SW_POWER_CAP | REASON_HW_POWER_BRAKE)) g->power_violation_ns += dt * 1e9;
    if (mask & (REASON_SW_THERMAL | REASON_HW_THERMAL)) g->thermal_violation_ns += dt * 1e9;
}

unsigned long long sim_ecc(const struct sim_gpu *g, int uncorrected, int aggregate) {
    const struct gpu_fault *f = sim_fault(g);
    unsigned long long vol = uncorrected ? (f->has_ecc_dbe ? (unsigned long long)f->ecc_dbe_volatile : 0)
                                         : (f->has_ecc_sbe ? (unsigned long long)f->ecc_sbe_volatile : 0);
    if (!aggregate) return vol;
    return vol + (uncorrected ? 0 : g->ecc_sbe_agg_base);
}

unsigned long long sim_nvlink_errors(const struct sim_gpu *g, int counter, int link) {
    const struct gpu_fault *f = sim_fault(g);
    unsigned long long crc = f->has_nvlink_crc ? (unsigned long long)f->nvlink_crc_errors : 0;
    /* Each CRC error makes the link replay the flit. */
    unsigned long long total =
        (counter == NVML_NVLINK_ERROR_DL_CRC_FLIT || counter == NVML_NVLINK_ERROR_DL_REPLAY) ? crc : 0;
    if (link < 0) return total;
    return total / NVML_NVLINK_MAX_LINKS + ((unsigned long long)link < total % NVML_NVLINK_MAX_LINKS);
}

unsigned long long sim_pcie_replays(const struct sim_gpu *g) {
    return g->pcie_replay_base + (unsigned long long)(elapsed() / 900.0);
}
