//! The NVIDIA driver's kernel log messages that matter to operations: Xid (GPU errors),
//! SXid (NVSwitch errors) and "GPU has fallen off the bus", in every shape the captured
//! lines in `testdata/kernel/` take — with or without a `dmesg` time prefix, the
//! classic `NVRM: Xid (PCI:0000:3b:00): 79, ...`, the NVLink5 extended Xid 144–150
//! text, and the pid/name prefix newer drivers put before the message.
//!
//! Only formats are parsed; what a code means is left to rules and operators.

use std::fmt;

/// What kind of driver message a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvidiaEvent {
    Xid,
    Sxid,
    FallenOffBus,
}

impl NvidiaEvent {
    /// The value of the `nvidia.event` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            NvidiaEvent::Xid => "xid",
            NvidiaEvent::Sxid => "sxid",
            NvidiaEvent::FallenOffBus => "fallen_off_bus",
        }
    }
}

/// A PCI address. The kernel writes GPUs as `0000:3b:00` (domain, bus, device), NVSwitch
/// messages and NVML add the function (`0000:05:00.0`, `00000000:3B:00.0`), and a few
/// messages leave the domain out (`18:00.0`); all parse to the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PciAddr {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciAddr {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix("PCI:").unwrap_or(text);
        let mut parts = text.rsplitn(3, ':');
        let dev_fn = parts.next()?;
        let bus = parts.next()?;
        let domain = parts.next().unwrap_or("0");
        let (device, function) = match dev_fn.split_once('.') {
            Some((d, f)) => (d, f),
            None => (dev_fn, "0"),
        };
        let hex = |s: &str, max_digits: usize| -> Option<u32> {
            if s.is_empty() || s.len() > max_digits {
                return None;
            }
            u32::from_str_radix(s, 16).ok()
        };
        let device = hex(device, 2)?;
        let function = hex(function, 1)?;
        if device > 0x1f || function > 7 {
            return None;
        }
        Some(Self {
            domain: hex(domain, 8)?,
            bus: u8::try_from(hex(bus, 2)?).ok()?,
            device: device as u8,
            function: function as u8,
        })
    }

    /// The same device, ignoring the function (kernel Xid lines carry none).
    pub fn same_device(&self, other: &PciAddr) -> bool {
        (self.domain, self.bus, self.device) == (other.domain, other.bus, other.device)
    }
}

/// NVML's format: `00000000:3B:00.0`.
impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08X}:{:02X}:{:02X}.{:X}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// One parsed driver message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvrmMessage<'a> {
    pub event: NvidiaEvent,
    /// The Xid or SXid code; None for "fallen off the bus".
    pub code: Option<u64>,
    pub pci: Option<PciAddr>,
    /// The driver's text after the code (or after the address), as an operator reads it.
    pub message: &'a str,
}

/// Parses a kernel log line (the message, with or without a time prefix); None for
/// lines that are none of the three.
pub fn parse(line: &str) -> Option<NvrmMessage<'_>> {
    if let Some(at) = line.find("NVRM: Xid (") {
        return coded(NvidiaEvent::Xid, &line[at + "NVRM: Xid (".len()..]);
    }
    if let Some(at) = line.find("SXid (") {
        return coded(NvidiaEvent::Sxid, &line[at + "SXid (".len()..]);
    }
    // The bare message, as some kernels log it without the NVRM prefix; not the same
    // words inside another tool's sentence ("if the target GPU has fallen off ...").
    let bare = match line.split_once("] ") {
        Some((stamp, rest)) if stamp.starts_with('[') => rest,
        _ => line,
    };
    if bare.trim_start().starts_with("GPU has fallen off the bus")
        || (line.contains("NVRM:") && line.contains("fallen off the bus"))
    {
        return Some(fallen_off_bus(line));
    }
    None
}

/// `PCI:0000:3b:00): 79, message` after the opening parenthesis.
fn coded(event: NvidiaEvent, rest: &str) -> Option<NvrmMessage<'_>> {
    let (address, rest) = rest.split_once("):")?;
    let pci = PciAddr::parse(address);
    let rest = rest.trim_start();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let code = rest[..digits].parse::<u64>().ok()?;
    let after = &rest[digits..];
    // The code ends the line or is followed by a comma; "79abc" is not a code.
    let message = match after.strip_prefix(',') {
        Some(m) => m.trim(),
        None if after.trim().is_empty() => "",
        None => return None,
    };
    Some(NvrmMessage {
        event,
        code: Some(code),
        pci,
        message,
    })
}

/// `NVRM: GPU 0000:29:00.0: GPU has fallen off the bus.` and the shapes without an address.
fn fallen_off_bus(line: &str) -> NvrmMessage<'_> {
    let after_nvrm = line.find("NVRM: ").map(|at| &line[at + "NVRM: ".len()..]);
    let addressed = after_nvrm
        .and_then(|rest| rest.strip_prefix("GPU "))
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(address, message)| Some((PciAddr::parse(address)?, message)));
    let (pci, message) = match addressed {
        Some((pci, message)) => (Some(pci), message),
        None => (None, after_nvrm.unwrap_or(line)),
    };
    NvrmMessage {
        event: NvidiaEvent::FallenOffBus,
        code: None,
        pci,
        message: message.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_every_format_are_one_value() {
        let a = PciAddr::parse("0000:3b:00").unwrap();
        let b = PciAddr::parse("00000000:3B:00.0").unwrap();
        let c = PciAddr::parse("PCI:0000:3b:00.0").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(b.to_string(), "00000000:3B:00.0");
        let no_domain = PciAddr::parse("18:00.0").unwrap();
        assert_eq!(no_domain.to_string(), "00000000:18:00.0");
        let f1 = PciAddr::parse("0008:01:00.1").unwrap();
        assert!(f1.same_device(&PciAddr::parse("0008:01:00").unwrap()));
        assert_ne!(f1, PciAddr::parse("0008:01:00").unwrap());
        for bad in [
            "",
            "3b",
            "zz:00.0",
            "0000:3b:00.9",
            "0000:3b:40",
            "0000:3b:00.0.0",
        ] {
            assert_eq!(PciAddr::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn classic_extended_and_prefixed_xids() {
        let m = parse("NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.").unwrap();
        assert_eq!(m.event, NvidiaEvent::Xid);
        assert_eq!(m.code, Some(79));
        assert_eq!(m.pci.unwrap().to_string(), "00000000:01:00.0");
        assert_eq!(m.message, "GPU has fallen off the bus.");

        let m = parse("[171167.620236] NVRM: Xid (PCI:0009:01:00): 149, NETIR_LINK_EVT  Fatal   XC0 i0 Link 01 (0x021425c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)").unwrap();
        assert_eq!(m.code, Some(149));
        assert_eq!(m.pci.unwrap().to_string(), "00000009:01:00.0");
        assert!(m.message.starts_with("NETIR_LINK_EVT  Fatal"));

        let m = parse("NVRM: Xid (PCI:0000:04:00): 69").unwrap();
        assert_eq!((m.code, m.message), (Some(69), ""));

        assert_eq!(
            parse("nvidia-nvswitch0: SXid (PCI:0000:00:00.0): xyz, Fatal error"),
            None
        );
        let m =
            parse("nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress")
                .unwrap();
        assert_eq!(m.event, NvidiaEvent::Sxid);
        assert_eq!(m.code, Some(12028));
        assert_eq!(m.pci.unwrap().to_string(), "00000000:05:00.0");
        assert_eq!(m.message, "Non-fatal, Link 32 egress");
    }

    #[test]
    fn fallen_off_the_bus_with_and_without_an_address() {
        let m = parse("NVRM: GPU 0000:29:00.0: GPU has fallen off the bus.").unwrap();
        assert_eq!(m.event, NvidiaEvent::FallenOffBus);
        assert_eq!(m.pci.unwrap().to_string(), "00000000:29:00.0");
        assert_eq!(m.message, "GPU has fallen off the bus.");
        let m = parse("NVRM: fallen off the bus and is not responding to commands.").unwrap();
        assert_eq!((m.event, m.pci), (NvidiaEvent::FallenOffBus, None));
        assert_eq!(
            parse("if the target GPU has fallen off the bus or is otherwise inaccessible"),
            None
        );
        assert_eq!(parse("NVRM: GPU at PCI:0000:9b:00: GPU-509665ad"), None);
    }
}
