/*
 * The fault file: a small TOML subset ([[gpu]] and [[xid]] tables of key = value
 * lines), parsed without a TOML library so the simulated NVML stays one C file set
 * with no dependencies. The grammar is documented in README.md; anything outside it
 * is an error naming the line, so a typo never silently injects nothing.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvml_sim.h"

#define MAX_XIDS 1000000

static const struct {
    const char *name;
    unsigned long long bit;
} REASONS[] = {
    {"gpu_idle", REASON_GPU_IDLE},
    {"applications_clocks_setting", REASON_APPLICATIONS_CLOCKS_SETTING},
    {"sw_power_cap", REASON_SW_POWER_CAP},
    {"hw_slowdown", REASON_HW_SLOWDOWN},
    {"sync_boost", REASON_SYNC_BOOST},
    {"sw_thermal", REASON_SW_THERMAL},
    {"hw_thermal", REASON_HW_THERMAL},
    {"hw_power_brake", REASON_HW_POWER_BRAKE},
    {"display_clocks_setting", REASON_DISPLAY_CLOCKS_SETTING},
};

unsigned long long throttle_reason_bit(const char *name) {
    for (size_t i = 0; i < sizeof(REASONS) / sizeof(REASONS[0]); i++) {
        if (strcmp(REASONS[i].name, name) == 0) return REASONS[i].bit;
    }
    return 0;
}

void faults_free(struct fault_state *state) {
    free(state->xids);
    memset(state, 0, sizeof(*state));
}

enum table { TABLE_NONE, TABLE_GPU, TABLE_XID };

/* One table being filled; committed to the state when the next header or EOF comes. */
struct pending {
    enum table kind;
    int line;              /* the header's line, for "index missing" errors */
    int has_index;
    long long index;
    struct gpu_fault gpu;
    int has_code;
    unsigned long long code;
};

struct parser {
    struct fault_state *out;
    int line;
    char *err;
    size_t err_len;
    int *err_line;
};

static int fail(struct parser *p, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, p->err_len, fmt, ap);
    va_end(ap);
    *p->err_line = line;
    return -1;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) end--;
    *end = '\0';
    return s;
}

/* Cuts a comment that starts outside a string. */
static void strip_comment(char *s) {
    int in_string = 0;
    for (; *s; s++) {
        if (*s == '"') in_string = !in_string;
        else if (*s == '#' && !in_string) {
            *s = '\0';
            return;
        }
    }
}

static int parse_int(struct parser *p, const char *key, const char *v, long long *out) {
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end != '\0' || errno != 0)
        return fail(p, p->line, "%s: expected an integer, got '%s'", key, v);
    *out = n;
    return 0;
}

static int parse_nonneg(struct parser *p, const char *key, const char *v, long long *out) {
    if (parse_int(p, key, v, out) != 0) return -1;
    if (*out < 0) return fail(p, p->line, "%s: must not be negative", key);
    return 0;
}

/* Accepts integers and decimals (`power_w = 612.5`), rounded to whole units. */
static int parse_number(struct parser *p, const char *key, const char *v, long *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || errno != 0 || d < 0 || d > 1e6)
        return fail(p, p->line, "%s: expected a non-negative number, got '%s'", key, v);
    *out = (long)(d + 0.5);
    return 0;
}

static int parse_bool(struct parser *p, const char *key, const char *v, int *out) {
    if (strcmp(v, "true") == 0) *out = 1;
    else if (strcmp(v, "false") == 0) *out = 0;
    else return fail(p, p->line, "%s: expected true or false, got '%s'", key, v);
    return 0;
}

/* `["hw_slowdown", "sw_thermal"]` on one line. */
static int parse_reasons(struct parser *p, char *v, unsigned long long *mask) {
    size_t len = strlen(v);
    if (len < 2 || v[0] != '[' || v[len - 1] != ']')
        return fail(p, p->line, "throttle: expected a one-line array of strings");
    v[len - 1] = '\0';
    *mask = 0;
    char *item = v + 1;
    while (*trim(item) != '\0') {
        item = trim(item);
        if (*item != '"') return fail(p, p->line, "throttle: expected a quoted reason");
        char *close = strchr(item + 1, '"');
        if (!close) return fail(p, p->line, "throttle: unterminated string");
        *close = '\0';
        unsigned long long bit = throttle_reason_bit(item + 1);
        if (bit == 0) return fail(p, p->line, "throttle: unknown reason '%s'", item + 1);
        *mask |= bit;
        char *rest = trim(close + 1);
        if (*rest == ',') rest++;
        else if (*rest != '\0') return fail(p, p->line, "throttle: expected ',' between reasons");
        item = rest;
    }
    return 0;
}

static int gpu_key(struct parser *p, struct pending *t, const char *key, char *v) {
    struct gpu_fault *g = &t->gpu;
    long long n;
    if (strcmp(key, "index") == 0) {
        if (parse_nonneg(p, key, v, &t->index) != 0) return -1;
        if (t->index >= SIM_MAX_GPUS)
            return fail(p, p->line, "index: at most %d GPUs are simulated", SIM_MAX_GPUS);
        t->has_index = 1;
    } else if (strcmp(key, "temperature_c") == 0) {
        g->has_temperature = 1;
        return parse_number(p, key, v, &g->temperature_c);
    } else if (strcmp(key, "power_w") == 0) {
        g->has_power = 1;
        return parse_number(p, key, v, &g->power_w);
    } else if (strcmp(key, "utilization_pct") == 0) {
        g->has_utilization = 1;
        if (parse_number(p, key, v, &g->utilization_pct) != 0) return -1;
        if (g->utilization_pct > 100) return fail(p, p->line, "utilization_pct: at most 100");
    } else if (strcmp(key, "ecc_sbe_volatile") == 0) {
        g->has_ecc_sbe = 1;
        if (parse_nonneg(p, key, v, &n) != 0) return -1;
        g->ecc_sbe_volatile = n;
    } else if (strcmp(key, "ecc_dbe_volatile") == 0) {
        g->has_ecc_dbe = 1;
        if (parse_nonneg(p, key, v, &n) != 0) return -1;
        g->ecc_dbe_volatile = n;
    } else if (strcmp(key, "retired_pages_pending") == 0) {
        g->has_retired_pending = 1;
        return parse_bool(p, key, v, &g->retired_pages_pending);
    } else if (strcmp(key, "row_remap_failure") == 0) {
        g->has_row_remap_failure = 1;
        return parse_bool(p, key, v, &g->row_remap_failure);
    } else if (strcmp(key, "nvlink_crc_errors") == 0) {
        g->has_nvlink_crc = 1;
        if (parse_nonneg(p, key, v, &n) != 0) return -1;
        g->nvlink_crc_errors = n;
    } else if (strcmp(key, "throttle") == 0) {
        g->has_throttle = 1;
        return parse_reasons(p, v, &g->throttle_mask);
    } else if (strcmp(key, "lost") == 0) {
        g->has_lost = 1;
        return parse_bool(p, key, v, &g->lost);
    } else {
        return fail(p, p->line, "unknown key '%s' in [[gpu]]", key);
    }
    return 0;
}

static int xid_key(struct parser *p, struct pending *t, const char *key, char *v) {
    long long n;
    if (strcmp(key, "gpu") == 0) {
        if (parse_nonneg(p, key, v, &t->index) != 0) return -1;
        if (t->index >= SIM_MAX_GPUS)
            return fail(p, p->line, "gpu: at most %d GPUs are simulated", SIM_MAX_GPUS);
        t->has_index = 1;
    } else if (strcmp(key, "code") == 0) {
        if (parse_nonneg(p, key, v, &n) != 0) return -1;
        t->code = (unsigned long long)n;
        t->has_code = 1;
    } else {
        return fail(p, p->line, "unknown key '%s' in [[xid]]", key);
    }
    return 0;
}

/* Later [[gpu]] tables for the same index override earlier ones key by key. */
static void merge_gpu(struct gpu_fault *dst, const struct gpu_fault *src) {
    dst->present = 1;
#define MERGE(flag, field) \
    if (src->flag) { dst->flag = 1; dst->field = src->field; }
    MERGE(has_temperature, temperature_c)
    MERGE(has_power, power_w)
    MERGE(has_utilization, utilization_pct)
    MERGE(has_ecc_sbe, ecc_sbe_volatile)
    MERGE(has_ecc_dbe, ecc_dbe_volatile)
    MERGE(has_retired_pending, retired_pages_pending)
    MERGE(has_row_remap_failure, row_remap_failure)
    MERGE(has_nvlink_crc, nvlink_crc_errors)
    MERGE(has_throttle, throttle_mask)
    MERGE(has_lost, lost)
#undef MERGE
}

static int commit(struct parser *p, struct pending *t) {
    struct fault_state *out = p->out;
    if (t->kind == TABLE_GPU) {
        if (!t->has_index) return fail(p, t->line, "[[gpu]] needs an index");
        merge_gpu(&out->gpu[t->index], &t->gpu);
    } else if (t->kind == TABLE_XID) {
        if (!t->has_index) return fail(p, t->line, "[[xid]] needs a gpu");
        if (!t->has_code) return fail(p, t->line, "[[xid]] needs a code");
        if (out->xid_count >= MAX_XIDS) return fail(p, t->line, "more than %d [[xid]] entries", MAX_XIDS);
        if (out->xid_count == out->xid_cap) {
            size_t cap = out->xid_cap ? out->xid_cap * 2 : 16;
            struct xid_entry *grown = realloc(out->xids, cap * sizeof(*grown));
            if (!grown) return fail(p, t->line, "out of memory");
            out->xids = grown;
            out->xid_cap = cap;
        }
        out->xids[out->xid_count].gpu = (unsigned int)t->index;
        out->xids[out->xid_count].code = t->code;
        out->xid_count++;
    }
    memset(t, 0, sizeof(*t));
    return 0;
}

int faults_parse(const char *text, struct fault_state *out, int *err_line, char *err,
                 size_t err_len) {
    memset(out, 0, sizeof(*out));
    char *copy = strdup(text);
    if (!copy) {
        snprintf(err, err_len, "out of memory");
        *err_line = 0;
        return -1;
    }
    struct parser p = {.out = out, .line = 0, .err = err, .err_len = err_len, .err_line = err_line};
    struct pending t;
    memset(&t, 0, sizeof(t));
    int rc = 0;
    char *cursor = copy;
    /* strtok_r would skip empty lines and so miscount; walk lines by hand. */
    while (cursor != NULL && rc == 0) {
        char *nl = strchr(cursor, '\n');
        if (nl) *nl = '\0';
        p.line++;
        char *line = cursor;
        cursor = nl ? nl + 1 : NULL;
        strip_comment(line);
        line = trim(line);
        if (*line == '\0') continue;
        if (line[0] == '[') {
            if ((rc = commit(&p, &t)) != 0) break;
            if (strcmp(line, "[[gpu]]") == 0) t.kind = TABLE_GPU;
            else if (strcmp(line, "[[xid]]") == 0) t.kind = TABLE_XID;
            else {
                rc = fail(&p, p.line, "unknown table %s (expected [[gpu]] or [[xid]])", line);
                break;
            }
            t.line = p.line;
            continue;
        }
        char *eq = strchr(line, '=');
        if (!eq) {
            rc = fail(&p, p.line, "expected key = value");
            break;
        }
        *eq = '\0';
        char *key = trim(line);
        char *value = trim(eq + 1);
        if (*value == '\0') rc = fail(&p, p.line, "%s: missing value", key);
        else if (t.kind == TABLE_GPU) rc = gpu_key(&p, &t, key, value);
        else if (t.kind == TABLE_XID) rc = xid_key(&p, &t, key, value);
        else rc = fail(&p, p.line, "key '%s' outside a [[gpu]] or [[xid]] table", key);
    }
    if (rc == 0) rc = commit(&p, &t);
    free(copy);
    if (rc != 0) faults_free(out);
    return rc;
}
