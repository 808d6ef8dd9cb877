//! The GPU families: dcgm-exporter's names, help and types, and Vigil's own.
//!
//! dcgm-exporter types its monotonic fields `counter` although their names end in
//! `_TOTAL`, `_VIOLATION` or nothing at all; exposed as counters they would need a
//! `_total` suffix and stop matching existing dashboards, so they are
//! [`MetricKind::Unknown`] here and keep their names byte for byte.

use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id;
use vigil_proto::MetricFamily;
use vigil_proto::metrics::MetricKind;

/// A per-GPU family with dcgm-exporter's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fam {
    GpuUtil,
    MemCopyUtil,
    EncUtil,
    DecUtil,
    FbFree,
    FbUsed,
    FbReserved,
    GpuTemp,
    MemoryTemp,
    PowerUsage,
    TotalEnergy,
    SmClock,
    MemClock,
    PcieReplay,
    EccSbeVol,
    EccDbeVol,
    EccSbeAgg,
    EccDbeAgg,
    RetiredSbe,
    RetiredDbe,
    RetiredPending,
    CorrectableRemappedRows,
    UncorrectableRemappedRows,
    RowRemapFailure,
    RowRemapPending,
    NvlinkCrcFlit,
    NvlinkCrcData,
    NvlinkReplay,
    NvlinkRecovery,
    ThermalViolation,
    PowerViolation,
    ClocksEventReasons,
    XidErrors,
}

/// Every [`Fam`] with its exposition; the order is the enum's, so `Fam as usize` indexes it.
pub const DCGM_FAMILIES: &[(Fam, &str, &str, MetricKind)] = {
    use Fam::*;
    use MetricKind::{Gauge, Unknown};
    &[
        (
            GpuUtil,
            "DCGM_FI_DEV_GPU_UTIL",
            "GPU utilization (in %).",
            Gauge,
        ),
        (
            MemCopyUtil,
            "DCGM_FI_DEV_MEM_COPY_UTIL",
            "Memory utilization (in %).",
            Gauge,
        ),
        (
            EncUtil,
            "DCGM_FI_DEV_ENC_UTIL",
            "Encoder utilization (in %).",
            Gauge,
        ),
        (
            DecUtil,
            "DCGM_FI_DEV_DEC_UTIL",
            "Decoder utilization (in %).",
            Gauge,
        ),
        (
            FbFree,
            "DCGM_FI_DEV_FB_FREE",
            "Framebuffer memory free (in MiB).",
            Gauge,
        ),
        (
            FbUsed,
            "DCGM_FI_DEV_FB_USED",
            "Framebuffer memory used (in MiB).",
            Gauge,
        ),
        (
            FbReserved,
            "DCGM_FI_DEV_FB_RESERVED",
            "Framebuffer memory reserved (in MiB).",
            Gauge,
        ),
        (
            GpuTemp,
            "DCGM_FI_DEV_GPU_TEMP",
            "GPU temperature (in C).",
            Gauge,
        ),
        (
            MemoryTemp,
            "DCGM_FI_DEV_MEMORY_TEMP",
            "Memory temperature (in C).",
            Gauge,
        ),
        (
            PowerUsage,
            "DCGM_FI_DEV_POWER_USAGE",
            "Power draw (in W).",
            Gauge,
        ),
        (
            TotalEnergy,
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "Total energy consumption since boot (in mJ).",
            Unknown,
        ),
        (
            SmClock,
            "DCGM_FI_DEV_SM_CLOCK",
            "SM clock frequency (in MHz).",
            Gauge,
        ),
        (
            MemClock,
            "DCGM_FI_DEV_MEM_CLOCK",
            "Memory clock frequency (in MHz).",
            Gauge,
        ),
        (
            PcieReplay,
            "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
            "Total number of PCIe retries.",
            Unknown,
        ),
        (
            EccSbeVol,
            "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
            "Total number of single-bit volatile ECC errors.",
            Unknown,
        ),
        (
            EccDbeVol,
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
            "Total number of double-bit volatile ECC errors.",
            Unknown,
        ),
        (
            EccSbeAgg,
            "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
            "Total number of single-bit persistent ECC errors.",
            Unknown,
        ),
        (
            EccDbeAgg,
            "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
            "Total number of double-bit persistent ECC errors.",
            Unknown,
        ),
        (
            RetiredSbe,
            "DCGM_FI_DEV_RETIRED_SBE",
            "Total number of retired pages due to single-bit errors.",
            Unknown,
        ),
        (
            RetiredDbe,
            "DCGM_FI_DEV_RETIRED_DBE",
            "Total number of retired pages due to double-bit errors.",
            Unknown,
        ),
        (
            RetiredPending,
            "DCGM_FI_DEV_RETIRED_PENDING",
            "Total number of pages pending retirement.",
            Unknown,
        ),
        (
            CorrectableRemappedRows,
            "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
            "Number of remapped rows for correctable errors",
            Unknown,
        ),
        (
            UncorrectableRemappedRows,
            "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
            "Number of remapped rows for uncorrectable errors",
            Unknown,
        ),
        (
            RowRemapFailure,
            "DCGM_FI_DEV_ROW_REMAP_FAILURE",
            "Whether remapping of rows has failed",
            Gauge,
        ),
        (
            RowRemapPending,
            "DCGM_FI_DEV_ROW_REMAP_PENDING",
            "Whether remapping of rows is pending",
            Gauge,
        ),
        (
            NvlinkCrcFlit,
            "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
            "Total number of NVLink flow-control CRC errors.",
            Unknown,
        ),
        (
            NvlinkCrcData,
            "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
            "Total number of NVLink data CRC errors.",
            Unknown,
        ),
        (
            NvlinkReplay,
            "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
            "Total number of NVLink retries.",
            Unknown,
        ),
        (
            NvlinkRecovery,
            "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
            "Total number of NVLink recovery errors.",
            Unknown,
        ),
        (
            ThermalViolation,
            "DCGM_FI_DEV_THERMAL_VIOLATION",
            "Throttling duration due to thermal constraints (in us).",
            Unknown,
        ),
        (
            PowerViolation,
            "DCGM_FI_DEV_POWER_VIOLATION",
            "Throttling duration due to power constraints (in us).",
            Unknown,
        ),
        (
            ClocksEventReasons,
            "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
            "Current clock event reasons (bitmask of DCGM_CLOCKS_EVENT_REASON_*).",
            Gauge,
        ),
        (
            XidErrors,
            "DCGM_FI_DEV_XID_ERRORS",
            "Value of the last XID error encountered.",
            Gauge,
        ),
    ]
};

/// The fields read in one `nvmlDeviceGetFieldValues` call per GPU per cycle: what
/// nvml-wrapper has no typed method for, and what would otherwise cost a call per
/// NVLink link (18 on an H100) or per ECC counter.
pub const FIELD_VALUES: &[(u32, Fam)] = &[
    (field_id::NVML_FI_DEV_MEMORY_TEMP, Fam::MemoryTemp),
    (field_id::NVML_FI_DEV_PCIE_REPLAY_COUNTER, Fam::PcieReplay),
    (field_id::NVML_FI_DEV_ECC_SBE_VOL_TOTAL, Fam::EccSbeVol),
    (field_id::NVML_FI_DEV_ECC_DBE_VOL_TOTAL, Fam::EccDbeVol),
    (field_id::NVML_FI_DEV_ECC_SBE_AGG_TOTAL, Fam::EccSbeAgg),
    (field_id::NVML_FI_DEV_ECC_DBE_AGG_TOTAL, Fam::EccDbeAgg),
    (field_id::NVML_FI_DEV_RETIRED_SBE, Fam::RetiredSbe),
    (field_id::NVML_FI_DEV_RETIRED_DBE, Fam::RetiredDbe),
    (field_id::NVML_FI_DEV_RETIRED_PENDING, Fam::RetiredPending),
    (
        field_id::NVML_FI_DEV_REMAPPED_COR,
        Fam::CorrectableRemappedRows,
    ),
    (
        field_id::NVML_FI_DEV_REMAPPED_UNC,
        Fam::UncorrectableRemappedRows,
    ),
    (field_id::NVML_FI_DEV_REMAPPED_FAILURE, Fam::RowRemapFailure),
    (field_id::NVML_FI_DEV_REMAPPED_PENDING, Fam::RowRemapPending),
    (
        field_id::NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL,
        Fam::NvlinkCrcFlit,
    ),
    (
        field_id::NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
        Fam::NvlinkCrcData,
    ),
    (
        field_id::NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL,
        Fam::NvlinkReplay,
    ),
    (
        field_id::NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
        Fam::NvlinkRecovery,
    ),
];

/// The field ids of [`FIELD_VALUES`], in its order.
pub fn field_ids() -> Vec<FieldId> {
    FIELD_VALUES.iter().map(|(id, _)| FieldId(*id)).collect()
}

/// NVML's clock event (throttle) reason bits, named for `vigil_gpu_throttle_active`.
pub const THROTTLE_REASONS: &[(&str, u64)] = &[
    ("gpu_idle", 0x1),
    ("applications_clocks_setting", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal", 0x20),
    ("hw_thermal", 0x40),
    ("hw_power_brake", 0x80),
    ("display_clocks_setting", 0x100),
];

/// The Xid codes the rule packs alert on; their counters start at 0 for every GPU so
/// that `increase()` sees the first occurrence.
pub const PREINITIALISED_XIDS: &[u64] =
    &[13, 31, 43, 45, 48, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120];

/// Empty families for every [`Fam`], indexed by `Fam as usize`.
pub fn new_dcgm_families() -> Vec<MetricFamily> {
    DCGM_FAMILIES
        .iter()
        .map(|(_, name, help, kind)| MetricFamily::new(*name, *help, *kind))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_in_enum_order() {
        for (i, (fam, _, _, _)) in DCGM_FAMILIES.iter().enumerate() {
            assert_eq!(*fam as usize, i, "{fam:?} is out of place");
        }
        assert_eq!(DCGM_FAMILIES.len(), Fam::XidErrors as usize + 1);
    }

    #[test]
    fn names_are_dcgm_exporter_names() {
        for (_, name, help, _) in DCGM_FAMILIES {
            assert!(name.starts_with("DCGM_FI_DEV_"), "{name}");
            assert!(!help.is_empty(), "{name} has no help");
        }
    }
}
