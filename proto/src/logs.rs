//! The log contract between the agent and the collector: how a log line travels as an
//! OTLP `LogRecord` (`ExportLogsServiceRequest`, the same resource attributes as
//! metrics: `host.name` is the node).
//!
//! - `time_unix_nano`: when the event happened — for the kernel log its timestamp turned
//!   into wall time; for files, when the agent read the line (files carry no common
//!   time format). `observed_time_unix_nano`: when the agent read it.
//! - `severity_number` / `severity_text`: OTLP's; kernel priorities 0–7 map to
//!   FATAL(21), FATAL(21), FATAL(21), ERROR(17), WARN(13), INFO(9), INFO(9), DEBUG(5)
//!   with the kernel's names (`emerg` … `debug`) as text.
//! - `body`: the line (string `AnyValue`), without its newline.
//! - attributes: the keys below. Anything else an OpenTelemetry SDK sends is kept too.
//!
//! The collector indexes: timestamp, node (`host.name`), source ([`SOURCE`], else
//! [`FILE_PATH`], else the resource's `service.name`, else `otlp`), severity (the text,
//! lower-cased, else derived from the number), body, and every attribute as JSON.

/// Where the line came from: the file's path for a tailed file, [`SOURCE_KERNEL`] for
/// the kernel log, `recovery:<action id>` for a recovery script's output.
pub const SOURCE: &str = "vigil.log.source";
/// The value of [`SOURCE`] for /dev/kmsg.
pub const SOURCE_KERNEL: &str = "kernel";
/// OpenTelemetry's semantic-convention key for a tailed file's path.
pub const FILE_PATH: &str = "log.file.path";
/// Bool, true on every piece of a line split at the agent's line cap.
pub const TRUNCATED: &str = "vigil.log.truncated";
/// Int, the piece's index (0, 1, ...) when a long line was split.
pub const PART: &str = "vigil.log.part";
/// Bool, true when the line was not valid UTF-8 and is carried as lossy text.
pub const INVALID_UTF8: &str = "vigil.log.invalid_utf8";
/// Int, the number of physical lines joined into one multiline record (only when > 1).
pub const JOINED_LINES: &str = "vigil.log.joined_lines";
/// Int, the kernel record's sequence number.
pub const KERNEL_SEQ: &str = "kernel.seq";
/// Int, the kernel record's facility.
pub const KERNEL_FACILITY: &str = "kernel.facility";
/// NVRM parsing of kernel lines: "xid", "sxid" or "fallen_off_bus".
pub const NVIDIA_EVENT: &str = "nvidia.event";
/// Int, the Xid (or SXid) code.
pub const NVIDIA_XID: &str = "nvidia.xid";
/// String, the GPU's PCI bus id as NVML writes it (`00000000:3B:00.0`).
pub const NVIDIA_PCI_BUS_ID: &str = "nvidia.pci_bus_id";
/// String, the GPU's index on the node as the `gpu` label of the metrics has it.
pub const NVIDIA_GPU: &str = "nvidia.gpu";
/// String, the GPU's UUID (`GPU-...`).
pub const NVIDIA_GPU_UUID: &str = "nvidia.gpu_uuid";
/// String, the driver's message after the code (the text an operator reads).
pub const NVIDIA_MESSAGE: &str = "nvidia.message";
/// String, which of a recovery script's streams the line came from: "stdout" or
/// "stderr" (its closing record, written by the agent, has none).
pub const RECOVERY_STREAM: &str = "vigil.recovery.stream";
/// String, the recovery script's name (a plain file name in the agent's recovery
/// directory).
pub const RECOVERY_SCRIPT: &str = "vigil.recovery.script";
/// String, the id of the action the recovery script ran for.
pub const RECOVERY_ACTION_ID: &str = "vigil.recovery.action_id";
/// The prefix of [`SOURCE`] for a recovery script's output: `recovery:<action id>`.
pub const SOURCE_RECOVERY_PREFIX: &str = "recovery:";
