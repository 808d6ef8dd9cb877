/* Shared between the simulation's state (sim_state.c) and its NVML entry points
 * (nvml_api.c). Nothing here is exported: the library is built with hidden visibility. */
#ifndef VIGIL_NVML_SIM_INTERNAL_H
#define VIGIL_NVML_SIM_INTERNAL_H

#include "nvml_sim.h"

/* Guards everything below; every entry point takes it. */
extern pthread_mutex_t sim_lock;
extern int sim_init_count;
extern unsigned int sim_gpu_count;
extern struct sim_gpu sim_gpus[SIM_MAX_GPUS];
extern struct fault_state sim_faults;
extern struct sim_event_set *sim_sets;

#define SIM_SUPPORTED_EVENTS                                                            \
    (nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError | nvmlEventTypePState | \
     nvmlEventTypeXidCriticalError | nvmlEventTypeClock)

/* Takes sim_lock and checks the library and the handle (refreshing the faults and
 * answering GPU_IS_LOST for a lost GPU); on failure it has unlocked again. */
nvmlReturn_t sim_enter(nvmlDevice_t device);
/* Unlocks sim_lock and returns rc. */
nvmlReturn_t sim_leave(nvmlReturn_t rc);

double sim_now_s(void);
/* Reads the settings (once per library instance) and lays out the GPUs. */
void sim_configure(void);
/* Re-reads the fault file when it changed (checked at most every 100 ms). */
void sim_refresh_faults(void);

const struct gpu_fault *sim_fault(const struct sim_gpu *g);
int sim_is_lost(const struct sim_gpu *g);
unsigned int sim_utilization(const struct sim_gpu *g);
unsigned int sim_temperature(const struct sim_gpu *g);
double sim_power_w(const struct sim_gpu *g);
unsigned long long sim_throttle_mask(const struct sim_gpu *g);
void sim_advance(struct sim_gpu *g);
unsigned long long sim_ecc(const struct sim_gpu *g, int uncorrected, int aggregate);
/* `link` < 0 sums over all links. */
unsigned long long sim_nvlink_errors(const struct sim_gpu *g, int counter, int link);
unsigned long long sim_pcie_replays(const struct sim_gpu *g);

#endif
