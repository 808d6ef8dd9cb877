/*
 * The health entry points: ECC, page retirement, row remapping, NVLink errors, PCIe
 * replays, field values, and Xid events from the fault file.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim_internal.h"

#define leave sim_leave
#define enter sim_enter

static int remap_failed(nvmlDevice_t g) {
    const struct gpu_fault *f = sim_fault(g);
    return f->has_row_remap_failure && f->row_remap_failure;
}

static int retired_pending(nvmlDevice_t g) {
    const struct gpu_fault *f = sim_fault(g);
    return f->has_retired_pending && f->retired_pages_pending;
}

/* An uncorrectable error remaps a row; the remap applies at the next GPU reset. */
static unsigned int remapped_uncorrectable(nvmlDevice_t g) { return (unsigned int)sim_ecc(g, 1, 0); }

NVML_API nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, unsigned int error_type,
                                                  unsigned int counter_type, unsigned long long *count) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!count || error_type > NVML_MEMORY_ERROR_TYPE_UNCORRECTED || counter_type > NVML_AGGREGATE_ECC)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *count = sim_ecc(device, error_type == NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                     counter_type == NVML_AGGREGATE_ECC);
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetRetiredPages(nvmlDevice_t device, unsigned int cause,
                                                unsigned int *page_count, unsigned long long *addresses) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    (void)addresses;
    if (!page_count || cause > NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *page_count = 0; /* HBM3 parts remap rows instead of retiring pages */
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetRetiredPages_v2(nvmlDevice_t device, unsigned int cause,
                                                   unsigned int *page_count, unsigned long long *addresses,
                                                   unsigned long long *timestamps) {
    (void)timestamps;
    return nvmlDeviceGetRetiredPages(device, cause, page_count, addresses);
}

NVML_API nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t device, unsigned int *pending) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!pending) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *pending = (unsigned int)retired_pending(device);
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corr, unsigned int *unc,
                                                unsigned int *pending, unsigned int *failure) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!corr || !unc || !pending || !failure) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *corr = 0;
    *unc = remapped_uncorrectable(device);
    *failure = (unsigned int)remap_failed(device);
    *pending = *unc > 0 && !*failure;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t device, unsigned int *value) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!value) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *value = (unsigned int)sim_pcie_replays(device);
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, unsigned int *active) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!active || link >= NVML_NVLINK_MAX_LINKS) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *active = 1;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetNvLinkErrorCounter(nvmlDevice_t device, unsigned int link,
                                                      unsigned int counter, unsigned long long *value) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!value || link >= NVML_NVLINK_MAX_LINKS || counter > NVML_NVLINK_ERROR_DL_ECC_DATA)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *value = sim_nvlink_errors(device, (int)counter, (int)link);
    return leave(NVML_SUCCESS);
}

/* One field for nvmlDeviceGetFieldValues; returns NOT_SUPPORTED for fields not simulated. */
static nvmlReturn_t field_value(nvmlDevice_t g, unsigned int id, nvmlFieldValue_t *v) {
    unsigned long long u64;
    switch (id) {
    case FI_ECC_SBE_VOL_TOTAL: u64 = sim_ecc(g, 0, 0); break;
    case FI_ECC_DBE_VOL_TOTAL: u64 = sim_ecc(g, 1, 0); break;
    case FI_ECC_SBE_AGG_TOTAL: u64 = sim_ecc(g, 0, 1); break;
    case FI_ECC_DBE_AGG_TOTAL: u64 = sim_ecc(g, 1, 1); break;
    case FI_RETIRED_SBE:
    case FI_RETIRED_DBE: u64 = 0; break;
    case FI_RETIRED_PENDING: u64 = (unsigned long long)retired_pending(g); break;
    case FI_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL: u64 = sim_nvlink_errors(g, NVML_NVLINK_ERROR_DL_CRC_FLIT, -1); break;
    case FI_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL: u64 = sim_nvlink_errors(g, NVML_NVLINK_ERROR_DL_CRC_DATA, -1); break;
    case FI_NVLINK_REPLAY_ERROR_COUNT_TOTAL: u64 = sim_nvlink_errors(g, NVML_NVLINK_ERROR_DL_REPLAY, -1); break;
    case FI_NVLINK_RECOVERY_ERROR_COUNT_TOTAL: u64 = sim_nvlink_errors(g, NVML_NVLINK_ERROR_DL_RECOVERY, -1); break;
    case FI_MEMORY_TEMP:
        v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        v->value.uiVal = sim_temperature(g) + 4;
        return NVML_SUCCESS;
    case FI_TOTAL_ENERGY_CONSUMPTION: u64 = (unsigned long long)g->energy_mj; break;
    case FI_PCIE_REPLAY_COUNTER: u64 = sim_pcie_replays(g); break;
    case FI_REMAPPED_COR: u64 = 0; break;
    case FI_REMAPPED_UNC: u64 = remapped_uncorrectable(g); break;
    case FI_REMAPPED_PENDING: u64 = remapped_uncorrectable(g) > 0 && !remap_failed(g); break;
    case FI_REMAPPED_FAILURE: u64 = (unsigned long long)remap_failed(g); break;
    default: return NVML_ERROR_NOT_SUPPORTED;
    }
    v->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
    v->value.ullVal = u64;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int count, nvmlFieldValue_t *values) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (count < 0 || (count > 0 && !values)) return leave(NVML_ERROR_INVALID_ARGUMENT);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now_us = (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *v = &values[i];
        v->timestamp = now_us;
        v->latencyUsec = 0;
        memset(&v->value, 0, sizeof(v->value));
        v->nvmlReturn = field_value(device, v->fieldId, v);
    }
    return leave(NVML_SUCCESS);
}

/* ---- events ------------------------------------------------------------------- */

NVML_API nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *types) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!types) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *types = SIM_SUPPORTED_EVENTS;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    pthread_mutex_lock(&sim_lock);
    if (sim_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    if (!set) return leave(NVML_ERROR_INVALID_ARGUMENT);
    struct sim_event_set *s = calloc(1, sizeof(*s));
    if (!s) return leave(NVML_ERROR_MEMORY);
    s->next = sim_sets;
    sim_sets = s;
    *set = s;
    return leave(NVML_SUCCESS);
}

static int set_is_live(nvmlEventSet_t set) {
    for (struct sim_event_set *s = sim_sets; s; s = s->next)
        if (s == set) return 1;
    return 0;
}

NVML_API nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types, nvmlEventSet_t set) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!set_is_live(set)) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (types & ~SIM_SUPPORTED_EVENTS) return leave(NVML_ERROR_NOT_SUPPORTED);
    set->registered[device->index] |= types;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    pthread_mutex_lock(&sim_lock);
    for (struct sim_event_set **p = &sim_sets; *p; p = &(*p)->next) {
        if (*p == set) {
            *p = set->next;
            free(set);
            return leave(NVML_SUCCESS);
        }
    }
    return leave(NVML_ERROR_INVALID_ARGUMENT);
}

/* The next fault-file Xid for this set, if any. A GPU that fell off the bus cannot be
 * registered any more, but the driver still reports its Xid (79) to sets that listen
 * for Xids, so those are delivered too. */
static int next_xid(struct sim_event_set *set, nvmlEventData_t *data) {
    int listens = 0;
    for (unsigned int i = 0; i < sim_gpu_count; i++)
        if (set->registered[i] & nvmlEventTypeXidCriticalError) listens = 1;
    while (set->next_xid < sim_faults.xid_count) {
        const struct xid_entry *e = &sim_faults.xids[set->next_xid++];
        if (e->gpu >= sim_gpu_count) continue;
        struct sim_gpu *g = &sim_gpus[e->gpu];
        int registered = (set->registered[e->gpu] & nvmlEventTypeXidCriticalError) != 0;
        if (!registered && !(listens && sim_is_lost(g))) continue;
        memset(data, 0, sizeof(*data));
        data->device = g;
        data->eventType = nvmlEventTypeXidCriticalError;
        data->eventData = e->code;
        data->gpuInstanceId = 0xFFFFFFFFu;
        data->computeInstanceId = 0xFFFFFFFFu;
        return 1;
    }
    return 0;
}

NVML_API nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeout_ms) {
    double deadline = sim_now_s() + timeout_ms / 1000.0;
    for (;;) {
        pthread_mutex_lock(&sim_lock);
        if (sim_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
        if (!data || !set_is_live(set)) return leave(NVML_ERROR_INVALID_ARGUMENT);
        sim_refresh_faults();
        if (next_xid(set, data)) return leave(NVML_SUCCESS);
        pthread_mutex_unlock(&sim_lock);
        double left = deadline - sim_now_s();
        if (left <= 0) return NVML_ERROR_TIMEOUT;
        /* Poll the fault file four times a second: Xid delivery within 250 ms is
         * plenty for tests and demos, and the simulation should cost the agent it
         * runs under (and the benchmark that measures it) next to nothing. */
        double step = left < 0.25 ? left : 0.25;
        struct timespec ts = {0, (long)(step * 1e9)};
        nanosleep(&ts, NULL);
    }
}

NVML_API nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeout_ms) {
    return nvmlEventSetWait_v2(set, data, timeout_ms);
}
