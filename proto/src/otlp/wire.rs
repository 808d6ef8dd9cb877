//! A borrowed view of an `ExportMetricsServiceRequest`, read straight from the
//! protobuf wire format or taken from prost's owned types.
//!
//! prost allocates a `String` per attribute key and value and a `Vec` per repeated
//! field: decoding an agent snapshot cost more than translating and storing it. The
//! view keeps names and values as slices of the request bytes and skips what the
//! translation never reads (descriptions, exemplars, scopes, schema URLs), so reading
//! a request allocates per data point, not per label. The translation works on this
//! view only; [`Request::from_prost`] gives the same view of a prost-decoded request,
//! which the tests compare with [`Request::parse`] on the same bytes.

mod from_prost;

/// Why bytes are not an `ExportMetricsServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (in {context}, at byte {offset})")]
pub struct WireError {
    pub message: String,
    pub context: &'static str,
    pub offset: usize,
}

/// Deeper nesting of attribute arrays and maps is refused (prost's own limit is 100).
const MAX_VALUE_DEPTH: u32 = 32;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request<'a> {
    pub resource_metrics: Vec<ResourceMetrics<'a>>,
}

/// A resource with its metrics; scopes are flattened away (they name no label).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceMetrics<'a> {
    pub attributes: Vec<Kv<'a>>,
    pub metrics: Vec<Metric<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Kv<'a> {
    pub key: &'a str,
    pub value: Value<'a>,
}

/// An attribute value; `None` when the `AnyValue` is absent or empty.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    None,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(Vec<Value<'a>>),
    Kvlist(Vec<Kv<'a>>),
    Strindex(i32),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metric<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub metadata: Vec<Kv<'a>>,
    pub data: Option<Data<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Data<'a> {
    Gauge(Vec<NumberPoint<'a>>),
    Sum {
        points: Vec<NumberPoint<'a>>,
        temporality: i32,
        monotonic: bool,
    },
    Histogram {
        points: Vec<HistogramPoint<'a>>,
        temporality: i32,
    },
    /// Refused whole, so only its points are counted.
    Exponential {
        points: usize,
    },
    Summary(Vec<SummaryPoint<'a>>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NumberPoint<'a> {
    pub attributes: Vec<Kv<'a>>,
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
    pub flags: u32,
    /// `as_double`, or `as_int` as a float (what Prometheus stores).
    pub value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramPoint<'a> {
    pub attributes: Vec<Kv<'a>>,
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
    pub count: u64,
    pub sum: Option<f64>,
    pub bucket_counts: Vec<u64>,
    pub explicit_bounds: Vec<f64>,
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SummaryPoint<'a> {
    pub attributes: Vec<Kv<'a>>,
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
    pub count: u64,
    pub sum: f64,
    /// `(quantile, value)`.
    pub quantiles: Vec<(f64, f64)>,
    pub flags: u32,
}

// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the whole request, for error messages.
    base: usize,
    context: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize, context: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            base,
            context,
        }
    }

    fn err(&self, message: impl Into<String>) -> WireError {
        WireError {
            message: message.into(),
            context: self.context,
            offset: self.base + self.pos,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// The next field number and wire type.
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(self.err(format!("invalid field number {field}")));
        }
        Ok((field as u32, (k & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| self.err(format!("truncated: {n} bytes announced")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Ok(u64::from_le_bytes(w))
    }

    /// A length-delimited field's bytes, and a reader over them.
    fn sub(&mut self, context: &'static str) -> Result<Reader<'a>, WireError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| self.err("length out of range"))?;
        let base = self.base + self.pos;
        Ok(Reader::new(self.take(n)?, base, context))
    }

    fn str(&mut self) -> Result<&'a str, WireError> {
        let r = self.sub(self.context)?;
        std::str::from_utf8(r.buf).map_err(|_| r.err("string field is not valid UTF-8"))
    }

    fn skip(&mut self, wire_type: u8) -> Result<(), WireError> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.sub(self.context).map(drop),
            FIXED32 => self.take(4).map(drop),
            // Groups (3, 4) are not in any OTLP message.
            w => Err(self.err(format!("unsupported wire type {w}"))),
        }
    }

    fn expect(&self, field: u32, got: u8, want: u8) -> Result<(), WireError> {
        if got == want {
            Ok(())
        } else {
            Err(self.err(format!(
                "field {field} has wire type {got}, expected {want}"
            )))
        }
    }

    /// A varint, fixed64 or length-delimited field as its type requires.
    fn fixed64_field(&mut self, field: u32, wt: u8) -> Result<u64, WireError> {
        self.expect(field, wt, FIXED64)?;
        self.fixed64()
    }

    fn varint_field(&mut self, field: u32, wt: u8) -> Result<u64, WireError> {
        self.expect(field, wt, VARINT)?;
        self.varint()
    }

    fn sub_field(
        &mut self,
        field: u32,
        wt: u8,
        context: &'static str,
    ) -> Result<Reader<'a>, WireError> {
        self.expect(field, wt, LEN)?;
        self.sub(context)
    }

    fn str_field(&mut self, field: u32, wt: u8) -> Result<&'a str, WireError> {
        self.expect(field, wt, LEN)?;
        self.str()
    }

    /// A repeated fixed64 or double field, packed or not.
    fn repeated_fixed64(
        &mut self,
        field: u32,
        wt: u8,
        out: &mut Vec<u64>,
    ) -> Result<(), WireError> {
        match wt {
            FIXED64 => out.push(self.fixed64()?),
            LEN => {
                let mut r = self.sub(self.context)?;
                if r.buf.len() % 8 != 0 {
                    return Err(r.err(format!("packed field {field} is not a multiple of 8 bytes")));
                }
                while !r.done() {
                    out.push(r.fixed64()?);
                }
            }
            _ => return Err(self.err(format!("field {field} has wire type {wt}"))),
        }
        Ok(())
    }
}

impl<'a> Request<'a> {
    /// Reads an `ExportMetricsServiceRequest` from protobuf bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Request<'a>, WireError> {
        let mut r = Reader::new(bytes, 0, "ExportMetricsServiceRequest");
        let mut out = Request::default();
        while !r.done() {
            match r.key()? {
                (1, wt) => {
                    let sub = r.sub_field(1, wt, "ResourceMetrics")?;
                    out.resource_metrics.push(resource_metrics(sub)?);
                }
                (_, wt) => r.skip(wt)?,
            }
        }
        Ok(out)
    }
}

fn resource_metrics(mut r: Reader<'_>) -> Result<ResourceMetrics<'_>, WireError> {
    let mut out = ResourceMetrics::default();
    while !r.done() {
        match r.key()? {
            (1, wt) => {
                let mut res = r.sub_field(1, wt, "Resource")?;
                while !res.done() {
                    match res.key()? {
                        (1, wt) => {
                            let kv = res.sub_field(1, wt, "KeyValue")?;
                            out.attributes.push(key_value(kv, 0)?);
                        }
                        (_, wt) => res.skip(wt)?,
                    }
                }
            }
            (2, wt) => {
                let mut sm = r.sub_field(2, wt, "ScopeMetrics")?;
                while !sm.done() {
                    match sm.key()? {
                        (2, wt) => {
                            let m = sm.sub_field(2, wt, "Metric")?;
                            out.metrics.push(metric(m)?);
                        }
                        (_, wt) => sm.skip(wt)?,
                    }
                }
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(out)
}

fn key_value(mut r: Reader<'_>, depth: u32) -> Result<Kv<'_>, WireError> {
    let mut kv = Kv {
        key: "",
        value: Value::None,
    };
    while !r.done() {
        match r.key()? {
            (1, wt) => kv.key = r.str_field(1, wt)?,
            (2, wt) => {
                let v = r.sub_field(2, wt, "AnyValue")?;
                kv.value = any_value(v, depth)?;
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(kv)
}

fn any_value(mut r: Reader<'_>, depth: u32) -> Result<Value<'_>, WireError> {
    if depth >= MAX_VALUE_DEPTH {
        return Err(r.err(format!(
            "attribute values nested deeper than {MAX_VALUE_DEPTH}"
        )));
    }
    let mut v = Value::None;
    while !r.done() {
        v = match r.key()? {
            (1, wt) => Value::Str(r.str_field(1, wt)?),
            (2, wt) => Value::Bool(r.varint_field(2, wt)? != 0),
            (3, wt) => Value::Int(r.varint_field(3, wt)? as i64),
            (4, wt) => Value::Double(f64::from_bits(r.fixed64_field(4, wt)?)),
            (5, wt) => {
                let mut a = r.sub_field(5, wt, "ArrayValue")?;
                let mut items = Vec::new();
                while !a.done() {
                    match a.key()? {
                        (1, wt) => {
                            let item = a.sub_field(1, wt, "AnyValue")?;
                            items.push(any_value(item, depth + 1)?);
                        }
                        (_, wt) => a.skip(wt)?,
                    }
                }
                Value::Array(items)
            }
            (6, wt) => {
                let mut l = r.sub_field(6, wt, "KeyValueList")?;
                let mut items = Vec::new();
                while !l.done() {
                    match l.key()? {
                        (1, wt) => {
                            let kv = l.sub_field(1, wt, "KeyValue")?;
                            items.push(key_value(kv, depth + 1)?);
                        }
                        (_, wt) => l.skip(wt)?,
                    }
                }
                Value::Kvlist(items)
            }
            (7, wt) => Value::Bytes(r.sub_field(7, wt, "AnyValue")?.buf),
            (8, wt) => Value::Strindex(r.varint_field(8, wt)? as i32),
            (_, wt) => {
                r.skip(wt)?;
                continue;
            }
        };
    }
    Ok(v)
}

fn metric(mut r: Reader<'_>) -> Result<Metric<'_>, WireError> {
    let mut m = Metric::default();
    while !r.done() {
        match r.key()? {
            (1, wt) => m.name = r.str_field(1, wt)?,
            (3, wt) => m.unit = r.str_field(3, wt)?,
            (12, wt) => {
                let kv = r.sub_field(12, wt, "KeyValue")?;
                m.metadata.push(key_value(kv, 0)?);
            }
            (5, wt) => {
                let mut g = r.sub_field(5, wt, "Gauge")?;
                let mut points = match m.data.take() {
                    Some(Data::Gauge(p)) => p,
                    _ => Vec::new(),
                };
                while !g.done() {
                    match g.key()? {
                        (1, wt) => {
                            points.push(number_point(g.sub_field(1, wt, "NumberDataPoint")?)?)
                        }
                        (_, wt) => g.skip(wt)?,
                    }
                }
                m.data = Some(Data::Gauge(points));
            }
            (7, wt) => {
                let mut s = r.sub_field(7, wt, "Sum")?;
                let (mut points, mut temporality, mut monotonic) = match m.data.take() {
                    Some(Data::Sum {
                        points,
                        temporality,
                        monotonic,
                    }) => (points, temporality, monotonic),
                    _ => (Vec::new(), 0, false),
                };
                while !s.done() {
                    match s.key()? {
                        (1, wt) => {
                            points.push(number_point(s.sub_field(1, wt, "NumberDataPoint")?)?)
                        }
                        (2, wt) => temporality = s.varint_field(2, wt)? as i32,
                        (3, wt) => monotonic = s.varint_field(3, wt)? != 0,
                        (_, wt) => s.skip(wt)?,
                    }
                }
                m.data = Some(Data::Sum {
                    points,
                    temporality,
                    monotonic,
                });
            }
            (9, wt) => {
                let mut h = r.sub_field(9, wt, "Histogram")?;
                let (mut points, mut temporality) = match m.data.take() {
                    Some(Data::Histogram {
                        points,
                        temporality,
                    }) => (points, temporality),
                    _ => (Vec::new(), 0),
                };
                while !h.done() {
                    match h.key()? {
                        (1, wt) => points.push(histogram_point(h.sub_field(
                            1,
                            wt,
                            "HistogramDataPoint",
                        )?)?),
                        (2, wt) => temporality = h.varint_field(2, wt)? as i32,
                        (_, wt) => h.skip(wt)?,
                    }
                }
                m.data = Some(Data::Histogram {
                    points,
                    temporality,
                });
            }
            (10, wt) => {
                let mut h = r.sub_field(10, wt, "ExponentialHistogram")?;
                let mut points = match m.data.take() {
                    Some(Data::Exponential { points }) => points,
                    _ => 0,
                };
                while !h.done() {
                    match h.key()? {
                        (1, wt) => {
                            h.sub_field(1, wt, "ExponentialHistogramDataPoint")?;
                            points += 1;
                        }
                        (_, wt) => h.skip(wt)?,
                    }
                }
                m.data = Some(Data::Exponential { points });
            }
            (11, wt) => {
                let mut s = r.sub_field(11, wt, "Summary")?;
                let mut points = match m.data.take() {
                    Some(Data::Summary(p)) => p,
                    _ => Vec::new(),
                };
                while !s.done() {
                    match s.key()? {
                        (1, wt) => {
                            points.push(summary_point(s.sub_field(1, wt, "SummaryDataPoint")?)?)
                        }
                        (_, wt) => s.skip(wt)?,
                    }
                }
                m.data = Some(Data::Summary(points));
            }
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(m)
}

/// Room for a typical point's attributes at the first one: growing 4, 8 costs a
/// reallocation per point.
const ATTRIBUTES_HINT: usize = 8;

fn push_attribute<'a>(attrs: &mut Vec<Kv<'a>>, kv: Kv<'a>) {
    if attrs.capacity() == 0 {
        attrs.reserve(ATTRIBUTES_HINT);
    }
    attrs.push(kv);
}

fn number_point(mut r: Reader<'_>) -> Result<NumberPoint<'_>, WireError> {
    let mut p = NumberPoint::default();
    while !r.done() {
        match r.key()? {
            (7, wt) => {
                let kv = r.sub_field(7, wt, "KeyValue")?;
                push_attribute(&mut p.attributes, key_value(kv, 0)?);
            }
            (2, wt) => p.start_time_unix_nano = r.fixed64_field(2, wt)?,
            (3, wt) => p.time_unix_nano = r.fixed64_field(3, wt)?,
            (4, wt) => p.value = Some(f64::from_bits(r.fixed64_field(4, wt)?)),
            (6, wt) => p.value = Some(r.fixed64_field(6, wt)? as i64 as f64),
            (8, wt) => p.flags = r.varint_field(8, wt)? as u32,
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(p)
}

fn histogram_point(mut r: Reader<'_>) -> Result<HistogramPoint<'_>, WireError> {
    let mut p = HistogramPoint::default();
    let mut bounds = Vec::new();
    while !r.done() {
        match r.key()? {
            (9, wt) => {
                let kv = r.sub_field(9, wt, "KeyValue")?;
                push_attribute(&mut p.attributes, key_value(kv, 0)?);
            }
            (2, wt) => p.start_time_unix_nano = r.fixed64_field(2, wt)?,
            (3, wt) => p.time_unix_nano = r.fixed64_field(3, wt)?,
            (4, wt) => p.count = r.fixed64_field(4, wt)?,
            (5, wt) => p.sum = Some(f64::from_bits(r.fixed64_field(5, wt)?)),
            (6, wt) => r.repeated_fixed64(6, wt, &mut p.bucket_counts)?,
            (7, wt) => r.repeated_fixed64(7, wt, &mut bounds)?,
            (10, wt) => p.flags = r.varint_field(10, wt)? as u32,
            (_, wt) => r.skip(wt)?,
        }
    }
    p.explicit_bounds = bounds.into_iter().map(f64::from_bits).collect();
    Ok(p)
}

fn summary_point(mut r: Reader<'_>) -> Result<SummaryPoint<'_>, WireError> {
    let mut p = SummaryPoint::default();
    while !r.done() {
        match r.key()? {
            (7, wt) => {
                let kv = r.sub_field(7, wt, "KeyValue")?;
                push_attribute(&mut p.attributes, key_value(kv, 0)?);
            }
            (2, wt) => p.start_time_unix_nano = r.fixed64_field(2, wt)?,
            (3, wt) => p.time_unix_nano = r.fixed64_field(3, wt)?,
            (4, wt) => p.count = r.fixed64_field(4, wt)?,
            (5, wt) => p.sum = f64::from_bits(r.fixed64_field(5, wt)?),
            (6, wt) => {
                let mut q = r.sub_field(6, wt, "ValueAtQuantile")?;
                let (mut quantile, mut value) = (0.0, 0.0);
                while !q.done() {
                    match q.key()? {
                        (1, wt) => quantile = f64::from_bits(q.fixed64_field(1, wt)?),
                        (2, wt) => value = f64::from_bits(q.fixed64_field(2, wt)?),
                        (_, wt) => q.skip(wt)?,
                    }
                }
                p.quantiles.push((quantile, value));
            }
            (8, wt) => p.flags = r.varint_field(8, wt)? as u32,
            (_, wt) => r.skip(wt)?,
        }
    }
    Ok(p)
}
