/*
 * The NVML entry points, with nvml.h's exact names and signatures, answering from
 * the simulation in sim_state.c. Only these functions are exported.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "sim_internal.h"

#define MIB (1024ULL * 1024ULL)
#define TOTAL_MEMORY (81559ULL * MIB) /* what an H100 80GB HBM3 reports */
#define RESERVED_MEMORY (592ULL * MIB)
#define leave sim_leave
#define enter sim_enter

static nvmlReturn_t enter_system(void) {
    pthread_mutex_lock(&sim_lock);
    if (sim_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_string(const char *value, char *out, unsigned int length) {
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

/* ---- library ------------------------------------------------------------------- */

NVML_API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&sim_lock);
    sim_configure();
    sim_init_count++;
    sim_refresh_faults();
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
NVML_API nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

NVML_API nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&sim_lock);
    if (sim_init_count == 0) return leave(NVML_ERROR_UNINITIALIZED);
    sim_init_count--;
    return leave(NVML_SUCCESS);
}

NVML_API const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    default: return "Unknown Error";
    }
}

NVML_API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t rc = enter_system();
    if (rc) return rc;
    return leave(copy_string("550.90.07", version, length));
}

NVML_API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    nvmlReturn_t rc = enter_system();
    if (rc) return rc;
    return leave(copy_string("12.550.90.07", version, length));
}

NVML_API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    nvmlReturn_t rc = enter_system();
    if (rc) return rc;
    if (!version) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *version = 12040;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    return nvmlSystemGetCudaDriverVersion(version);
}

/* ---- device discovery -------------------------------------------------------------- */

NVML_API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    nvmlReturn_t rc = enter_system();
    if (rc) return rc;
    if (!count) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *count = sim_gpu_count;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

NVML_API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t rc = enter_system();
    if (rc) return rc;
    if (!device || index >= sim_gpu_count) return leave(NVML_ERROR_INVALID_ARGUMENT);
    sim_refresh_faults();
    /* nvml.h: GPU_IS_LOST "if the target GPU has fallen off the bus". */
    if (sim_is_lost(&sim_gpus[index])) return leave(NVML_ERROR_GPU_IS_LOST);
    *device = &sim_gpus[index];
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

static nvmlReturn_t handle_by(int (*match)(const struct sim_gpu *, const char *), const char *key,
                              nvmlDevice_t *device) {
    nvmlReturn_t rc = enter_system();
    if (rc) return rc;
    if (!key || !device) return leave(NVML_ERROR_INVALID_ARGUMENT);
    sim_refresh_faults();
    for (unsigned int i = 0; i < sim_gpu_count; i++) {
        if (match(&sim_gpus[i], key)) {
            if (sim_is_lost(&sim_gpus[i])) return leave(NVML_ERROR_GPU_IS_LOST);
            *device = &sim_gpus[i];
            return leave(NVML_SUCCESS);
        }
    }
    return leave(NVML_ERROR_NOT_FOUND);
}

static int uuid_is(const struct sim_gpu *g, const char *k) { return strcmp(g->uuid, k) == 0; }
static int bus_is(const struct sim_gpu *g, const char *k) { return strcasecmp(g->bus_id, k) == 0; }
static int serial_is(const struct sim_gpu *g, const char *k) { return strcmp(g->serial, k) == 0; }

NVML_API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    return handle_by(uuid_is, uuid, device);
}
NVML_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus_id, nvmlDevice_t *device) {
    return handle_by(bus_is, bus_id, device);
}
NVML_API nvmlReturn_t nvmlDeviceGetHandleBySerial(const char *serial, nvmlDevice_t *device) {
    return handle_by(serial_is, serial, device);
}

/* ---- identity ------------------------------------------------------------------ */

NVML_API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    return leave(copy_string("NVIDIA H100 80GB HBM3", name, length));
}

NVML_API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    return leave(copy_string(device->uuid, uuid, length));
}

NVML_API nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    return leave(copy_string(device->serial, serial, length));
}

/* Index, minor number and board id are all the GPU's index: the simulated GPUs are
 * numbered like a fresh boot (/dev/nvidiaN for GPU N), one GPU per board. */
static nvmlReturn_t index_out(nvmlDevice_t device, unsigned int *out) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!out) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *out = device->index;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    return index_out(device, index);
}
NVML_API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minor) {
    return index_out(device, minor);
}
NVML_API nvmlReturn_t nvmlDeviceGetBoardId(nvmlDevice_t device, unsigned int *board) {
    return index_out(device, board);
}

NVML_API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!pci) return leave(NVML_ERROR_INVALID_ARGUMENT);
    memset(pci, 0, sizeof(*pci));
    pci->domain = device->domain;
    pci->bus = device->bus;
    pci->device = 0;
    pci->pciDeviceId = 0x233010de;    /* H100 SXM5 80GB */
    pci->pciSubSystemId = 0x16c110de;
    snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%04X:%02X:00.0", device->domain, device->bus);
    snprintf(pci->busId, sizeof(pci->busId), "%s", device->bus_id);
    return leave(NVML_SUCCESS);
}
NVML_API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t d, nvmlPciInfo_t *p) { return nvmlDeviceGetPciInfo_v3(d, p); }
NVML_API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t d, nvmlPciInfo_t *p) { return nvmlDeviceGetPciInfo_v3(d, p); }

/* ---- utilisation, memory, temperature, power, clocks ---------------------------- */

NVML_API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *u) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!u) return leave(NVML_ERROR_INVALID_ARGUMENT);
    u->gpu = sim_utilization(device);
    u->memory = u->gpu * 6 / 10;
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t codec_utilization(nvmlDevice_t device, unsigned int *util, unsigned int *period) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!util || !period) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *util = 0; /* training nodes do not encode or decode video */
    *period = 167000;
    return leave(NVML_SUCCESS);
}
NVML_API nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t d, unsigned int *u, unsigned int *p) {
    return codec_utilization(d, u, p);
}
NVML_API nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t d, unsigned int *u, unsigned int *p) {
    return codec_utilization(d, u, p);
}

static unsigned long long memory_used(nvmlDevice_t device) {
    return (1200ULL + 700ULL * sim_utilization(device)) * MIB;
}

NVML_API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *m) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!m) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (m->version != NVML_MEMORY_V2) return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    m->total = TOTAL_MEMORY;
    m->reserved = RESERVED_MEMORY;
    m->used = memory_used(device);
    m->free = TOTAL_MEMORY - RESERVED_MEMORY - m->used;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *m) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!m) return leave(NVML_ERROR_INVALID_ARGUMENT);
    m->total = TOTAL_MEMORY;
    m->used = memory_used(device) + RESERVED_MEMORY;
    m->free = TOTAL_MEMORY - m->used;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, unsigned int sensor, unsigned int *temp) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!temp || sensor != NVML_TEMPERATURE_GPU) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *temp = sim_temperature(device);
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *milliwatts) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!milliwatts) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *milliwatts = (unsigned int)(sim_power_w(device) * 1000.0);
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *mj) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!mj) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *mj = (unsigned long long)device->energy_mj;
    return leave(NVML_SUCCESS);
}

NVML_API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, unsigned int type, unsigned int *mhz) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!mhz) return leave(NVML_ERROR_INVALID_ARGUMENT);
    unsigned long long mask = sim_throttle_mask(device);
    int slowed = (mask & ~(REASON_GPU_IDLE | REASON_APPLICATIONS_CLOCKS_SETTING)) != 0;
    unsigned int sm = sim_utilization(device) < 5 ? 345 : (slowed ? 1410 : 1980);
    switch (type) {
    case NVML_CLOCK_GRAPHICS:
    case NVML_CLOCK_SM: *mhz = sm; break;
    case NVML_CLOCK_MEM: *mhz = 2619; break;
    case NVML_CLOCK_VIDEO: *mhz = sm * 9 / 10; break;
    default: return leave(NVML_ERROR_INVALID_ARGUMENT);
    }
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t reasons(nvmlDevice_t device, unsigned long long *out, int supported) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!out) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *out = supported ? 0x1ffULL : sim_throttle_mask(device);
    return leave(NVML_SUCCESS);
}
NVML_API nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *r) {
    return reasons(d, r, 0);
}
NVML_API nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *r) {
    return reasons(d, r, 0);
}
NVML_API nvmlReturn_t nvmlDeviceGetSupportedClocksThrottleReasons(nvmlDevice_t d, unsigned long long *r) {
    return reasons(d, r, 1);
}
NVML_API nvmlReturn_t nvmlDeviceGetSupportedClocksEventReasons(nvmlDevice_t d, unsigned long long *r) {
    return reasons(d, r, 1);
}

NVML_API nvmlReturn_t nvmlDeviceGetViolationStatus(nvmlDevice_t device, unsigned int policy,
                                                   nvmlViolationTime_t *v) {
    nvmlReturn_t rc = enter(device);
    if (rc) return rc;
    if (!v) return leave(NVML_ERROR_INVALID_ARGUMENT);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v->referenceTime = (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
    if (policy == NVML_PERF_POLICY_POWER) v->violationTime = (unsigned long long)device->power_violation_ns;
    else if (policy == NVML_PERF_POLICY_THERMAL) v->violationTime = (unsigned long long)device->thermal_violation_ns;
    else return leave(NVML_ERROR_NOT_SUPPORTED);
    return leave(NVML_SUCCESS);
}
