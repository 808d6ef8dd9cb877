/*
 * Simulated NVML: the subset of nvml.h's ABI that vigil-agent calls, plus the
 * library's internal state.
 *
 * Every enum value and struct layout here must match NVIDIA's nvml.h (and so
 * nvml-wrapper-sys 0.10's bindings), because nvml-wrapper calls this library exactly
 * as it calls the real libnvidia-ml.so.1.
 */
#ifndef VIGIL_NVML_SIM_H
#define VIGIL_NVML_SIM_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#define NVML_API __attribute__((visibility("default")))

/* ---- nvml.h ABI ---------------------------------------------------------------- */

typedef unsigned int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

typedef struct sim_gpu *nvmlDevice_t;
typedef struct sim_event_set *nvmlEventSet_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;
/* nvml.h: NVML_STRUCT_VERSION(Memory, 2) */
#define NVML_MEMORY_V2 ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

typedef struct {
    unsigned long long referenceTime;
    unsigned long long violationTime;
} nvmlViolationTime_t;

typedef union {
    double dVal;
    int siVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    unsigned int valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

enum { NVML_VALUE_TYPE_UNSIGNED_INT = 1, NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3 };
enum { NVML_TEMPERATURE_GPU = 0 };
enum { NVML_CLOCK_GRAPHICS = 0, NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2, NVML_CLOCK_VIDEO = 3 };
enum { NVML_MEMORY_ERROR_TYPE_CORRECTED = 0, NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1 };
enum { NVML_VOLATILE_ECC = 0, NVML_AGGREGATE_ECC = 1 };
enum { NVML_PERF_POLICY_POWER = 0, NVML_PERF_POLICY_THERMAL = 1 };
enum {
    NVML_NVLINK_ERROR_DL_REPLAY = 0,
    NVML_NVLINK_ERROR_DL_RECOVERY = 1,
    NVML_NVLINK_ERROR_DL_CRC_FLIT = 2,
    NVML_NVLINK_ERROR_DL_CRC_DATA = 3,
    NVML_NVLINK_ERROR_DL_ECC_DATA = 4,
};
enum {
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0,
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1,
};

#define NVML_NVLINK_MAX_LINKS 18
#define nvmlEventTypeSingleBitEccError 0x1ULL
#define nvmlEventTypeDoubleBitEccError 0x2ULL
#define nvmlEventTypePState 0x4ULL
#define nvmlEventTypeXidCriticalError 0x8ULL
#define nvmlEventTypeClock 0x10ULL

/* Clock event (throttle) reason bits, nvml.h's nvmlClocksEventReason*. */
#define REASON_GPU_IDLE 0x1ULL
#define REASON_APPLICATIONS_CLOCKS_SETTING 0x2ULL
#define REASON_SW_POWER_CAP 0x4ULL
#define REASON_HW_SLOWDOWN 0x8ULL
#define REASON_SYNC_BOOST 0x10ULL
#define REASON_SW_THERMAL 0x20ULL
#define REASON_HW_THERMAL 0x40ULL
#define REASON_HW_POWER_BRAKE 0x80ULL
#define REASON_DISPLAY_CLOCKS_SETTING 0x100ULL

/* nvmlDeviceGetFieldValues field ids (nvml.h NVML_FI_DEV_*), the ones simulated. */
enum {
    FI_ECC_SBE_VOL_TOTAL = 3,
    FI_ECC_DBE_VOL_TOTAL = 4,
    FI_ECC_SBE_AGG_TOTAL = 5,
    FI_ECC_DBE_AGG_TOTAL = 6,
    FI_RETIRED_SBE = 29,
    FI_RETIRED_DBE = 30,
    FI_RETIRED_PENDING = 31,
    FI_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL = 38,
    FI_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL = 45,
    FI_NVLINK_REPLAY_ERROR_COUNT_TOTAL = 52,
    FI_NVLINK_RECOVERY_ERROR_COUNT_TOTAL = 59,
    FI_MEMORY_TEMP = 82,
    FI_TOTAL_ENERGY_CONSUMPTION = 83,
    FI_PCIE_REPLAY_COUNTER = 94,
    FI_REMAPPED_COR = 142,
    FI_REMAPPED_UNC = 143,
    FI_REMAPPED_PENDING = 144,
    FI_REMAPPED_FAILURE = 145,
};

/* ---- the simulation ------------------------------------------------------------ */

#define SIM_MAX_GPUS 64

/* Overrides for one GPU from the fault file; `has_*` says which keys were given. */
struct gpu_fault {
    int present;
    int has_temperature, has_power, has_utilization, has_ecc_sbe, has_ecc_dbe;
    int has_retired_pending, has_row_remap_failure, has_nvlink_crc, has_throttle, has_lost;
    long temperature_c;
    long power_w;
    long utilization_pct;
    long long ecc_sbe_volatile;
    long long ecc_dbe_volatile;
    int retired_pages_pending;
    int row_remap_failure;
    long long nvlink_crc_errors;
    unsigned long long throttle_mask;
    int lost;
};

struct xid_entry {
    unsigned int gpu;
    unsigned long long code;
};

/* The parsed fault file: what the library answers with until the file changes. */
struct fault_state {
    struct gpu_fault gpu[SIM_MAX_GPUS];
    struct xid_entry *xids;
    size_t xid_count;
    size_t xid_cap;
};

/* Parses fault-file text. On error returns -1 with `err_line` and `err` set, and leaves
 * `out` freed; on success fills `out` (free with faults_free). */
int faults_parse(const char *text, struct fault_state *out, int *err_line, char *err,
                 size_t err_len);
void faults_free(struct fault_state *state);

/* Maps a throttle reason name (vigil's snake_case) to its bit; 0 when unknown. */
unsigned long long throttle_reason_bit(const char *name);

struct sim_gpu {
    unsigned int index;
    char uuid[48];
    char serial[24];
    char bus_id[32];
    unsigned int domain;
    unsigned int bus;
    double phase;               /* per-GPU offset so the GPUs do not move in lockstep */
    unsigned long long ecc_sbe_agg_base;
    unsigned long long pcie_replay_base;
    double energy_mj;           /* integrated from power draw */
    double power_violation_ns;
    double thermal_violation_ns;
    double last_update_s;       /* when the integrals above were last advanced */
};

struct sim_event_set {
    unsigned long long registered[SIM_MAX_GPUS]; /* event mask per GPU */
    size_t next_xid;            /* index of the next fault-file Xid entry to deliver */
    struct sim_event_set *next; /* the library's list of live sets */
};

#endif
