//! Searching the partitions: a tantivy query over `body` and `attributes` plus exact
//! filters (node, severity, source) and a time range, newest first with a
//! `(timestamp, id)` cursor; and the id-range reads behind the live tail and the
//! log-derived metrics.

use std::ops::Bound;
use std::sync::Arc;

use tantivy::collector::sort_key::SortByStaticFastValue;
use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DocAddress, Order, TantivyDocument, Term};

use super::partition::{Partition, hour_of};
use super::record::MAX_BATCH_RECORDS;
use super::schema::Fields;
use super::{IndexError, LogRecord};

/// Largest page.
pub const MAX_LIMIT: usize = 10_000;

/// Where the next page starts: just after (older than) this record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub time_ns: i64,
    pub id: u64,
}

impl Cursor {
    /// `<time_ns>_<id>`, opaque to clients.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.time_ns, self.id)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (t, id) = s.split_once('_')?;
        Some(Cursor {
            time_ns: t.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

/// What to look for. Times are inclusive, in ns.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// tantivy query syntax over `body` and `attributes`; terms are ANDed; empty: all.
    pub query: String,
    pub node: Option<String>,
    pub severity: Option<String>,
    pub source: Option<String>,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

/// One record found, with its id (unique, increasing in arrival order).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub record: LogRecord,
}

#[derive(Debug, Clone, Default)]
pub struct SearchResult {
    /// Records matching the query and filters in the whole range (not only this page).
    pub total: u64,
    /// Newest first.
    pub hits: Vec<Hit>,
    pub next_cursor: Option<Cursor>,
}

/// Parses user queries against the schema (no index needed).
pub(crate) struct Parser {
    parser: QueryParser,
}

impl Parser {
    pub(crate) fn new(fields: &Fields) -> Parser {
        let mut parser = QueryParser::new(
            fields.schema.clone(),
            vec![fields.body, fields.attributes],
            TokenizerManager::default(),
        );
        parser.set_conjunction_by_default();
        Parser { parser }
    }

    /// The query, or why it is not one; `None` for an empty query (everything).
    pub(crate) fn parse(&self, query: &str) -> Result<Option<Box<dyn Query>>, IndexError> {
        if query.trim().is_empty() || query.trim() == "*" {
            return Ok(None);
        }
        self.parser
            .parse_query(query)
            .map(Some)
            .map_err(|e| IndexError::BadQuery(format!("query {query:?}: {e}")))
    }
}

/// The filters of a request, applied to every partition.
pub(crate) struct Filter {
    pub(crate) text: Option<Box<dyn Query>>,
    pub(crate) node: Option<String>,
    pub(crate) severity: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) start_ns: Option<i64>,
    pub(crate) end_ns: Option<i64>,
}

impl Filter {
    pub(crate) fn from_request(parser: &Parser, req: &SearchRequest) -> Result<Filter, IndexError> {
        Ok(Filter {
            text: parser.parse(&req.query)?,
            node: req.node.clone().filter(|s| !s.is_empty()),
            severity: req
                .severity
                .clone()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_ascii_lowercase()),
            source: req.source.clone().filter(|s| !s.is_empty()),
            start_ns: req.start_ns,
            end_ns: req.end_ns,
        })
    }

    /// Does the partition's hour overlap the time range?
    pub(crate) fn overlaps(&self, p: &Partition) -> bool {
        let (start, end) = p.range_ns();
        self.start_ns.is_none_or(|s| end > s) && self.end_ns.is_none_or(|e| start <= e)
    }

    /// The clauses every search ANDs.
    fn clauses(&self, f: &Fields) -> Vec<(Occur, Box<dyn Query>)> {
        let mut out: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(q) = &self.text {
            out.push((Occur::Must, q.box_clone()));
        }
        for (field, value) in [
            (f.node, &self.node),
            (f.severity, &self.severity),
            (f.source, &self.source),
        ] {
            if let Some(v) = value {
                out.push((
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_text(field, v),
                        IndexRecordOption::Basic,
                    )),
                ));
            }
        }
        if self.start_ns.is_some() || self.end_ns.is_some() {
            let bound = |v: Option<i64>| match v {
                Some(v) => Bound::Included(Term::from_field_i64(f.timestamp, v)),
                None => Bound::Unbounded,
            };
            out.push((
                Occur::Must,
                Box::new(RangeQuery::new(bound(self.start_ns), bound(self.end_ns))),
            ));
        }
        out
    }
}

fn and(clauses: Vec<(Occur, Box<dyn Query>)>) -> Box<dyn Query> {
    if clauses.is_empty() {
        Box::new(AllQuery)
    } else {
        Box::new(BooleanQuery::new(clauses))
    }
}

/// Records strictly older than the cursor in `(timestamp, id)` order.
fn before_cursor(f: &Fields, c: Cursor) -> Box<dyn Query> {
    let older = RangeQuery::new(
        Bound::Unbounded,
        Bound::Excluded(Term::from_field_i64(f.timestamp, c.time_ns)),
    );
    let same_time = RangeQuery::new(
        Bound::Included(Term::from_field_i64(f.timestamp, c.time_ns)),
        Bound::Included(Term::from_field_i64(f.timestamp, c.time_ns)),
    );
    let lower_id = RangeQuery::new(
        Bound::Unbounded,
        Bound::Excluded(Term::from_field_u64(f.id, c.id)),
    );
    Box::new(BooleanQuery::new(vec![
        (Occur::Should, Box::new(older) as Box<dyn Query>),
        (
            Occur::Should,
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(same_time) as Box<dyn Query>),
                (Occur::Must, Box::new(lower_id)),
            ])),
        ),
    ]))
}

/// Ids of batches `after_seq + 1 ..= through_seq`.
fn id_range(f: &Fields, after_seq: u64, through_seq: u64) -> Box<dyn Query> {
    Box::new(RangeQuery::new(
        Bound::Included(Term::from_field_u64(
            f.id,
            (after_seq + 1).saturating_mul(MAX_BATCH_RECORDS),
        )),
        Bound::Excluded(Term::from_field_u64(
            f.id,
            (through_seq + 1).saturating_mul(MAX_BATCH_RECORDS),
        )),
    ))
}

fn tantivy_err(what: &str) -> impl FnOnce(tantivy::TantivyError) -> IndexError + '_ {
    move |e| IndexError::tantivy(what.to_owned(), e)
}

/// `(timestamp, id)` of a found document, as the collector sorts it.
type SortKey = (Option<i64>, Option<u64>);

/// Newest first over `partitions` (any order; those outside the range are skipped).
pub(crate) fn search(
    f: &Fields,
    mut partitions: Vec<Arc<Partition>>,
    filter: &Filter,
    limit: usize,
    cursor: Option<Cursor>,
) -> Result<SearchResult, IndexError> {
    partitions.retain(|p| filter.overlaps(p));
    partitions.sort_by_key(|p| std::cmp::Reverse(p.hour));
    let base = and(filter.clauses(f));
    let paged = match cursor {
        None => None,
        Some(c) => {
            let mut clauses = filter.clauses(f);
            clauses.push((Occur::Must, before_cursor(f, c)));
            Some(and(clauses))
        }
    };
    let cursor_hour = cursor.map(|c| hour_of(c.time_ns));
    // One more than asked, to know whether there is a next page.
    let want = limit + 1;
    let mut total = 0u64;
    let mut found: Vec<(SortKey, DocAddress, usize)> = Vec::new();
    let mut searchers = Vec::new();
    for p in &partitions {
        let searcher = p.reader.searcher();
        let still_wanted = want.saturating_sub(found.len());
        let in_reach = cursor_hour.is_none_or(|h| p.hour <= h);
        if still_wanted == 0 || !in_reach {
            total += searcher
                .search(&*base, &Count)
                .map_err(tantivy_err("counting"))? as u64;
            continue;
        }
        let top = TopDocs::with_limit(still_wanted).order_by((
            (
                SortByStaticFastValue::<i64>::for_field("timestamp"),
                Order::Desc,
            ),
            (SortByStaticFastValue::<u64>::for_field("id"), Order::Desc),
        ));
        let docs = match &paged {
            None => {
                let (n, docs) = searcher
                    .search(&*base, &(Count, top))
                    .map_err(tantivy_err("searching"))?;
                total += n as u64;
                docs
            }
            Some(q) => {
                total += searcher
                    .search(&*base, &Count)
                    .map_err(tantivy_err("counting"))? as u64;
                searcher
                    .search(&**q, &top)
                    .map_err(tantivy_err("searching"))?
            }
        };
        let si = searchers.len();
        searchers.push(searcher);
        found.extend(docs.into_iter().map(|(k, a)| (k, a, si)));
    }
    let more = found.len() > limit;
    found.truncate(limit);
    let mut hits = Vec::with_capacity(found.len());
    for (_, addr, si) in found {
        let d: TantivyDocument = searchers[si]
            .doc(addr)
            .map_err(tantivy_err("reading a document"))?;
        let (record, id) = f.record(&d);
        hits.push(Hit { id, record });
    }
    let next_cursor = if more {
        hits.last().map(|h| Cursor {
            time_ns: h.record.time_ns,
            id: h.id,
        })
    } else {
        None
    };
    Ok(SearchResult {
        total,
        hits,
        next_cursor,
    })
}

/// Records of batches `after_seq + 1 ..= through_seq` matching `filter`, oldest id
/// first, at most `limit` (all without one): what the tail streams and the log
/// metrics count.
pub(crate) fn between(
    f: &Fields,
    partitions: &[Arc<Partition>],
    filter: &Filter,
    after_seq: u64,
    through_seq: u64,
    limit: Option<usize>,
) -> Result<Vec<Hit>, IndexError> {
    let mut clauses = filter.clauses(f);
    clauses.push((Occur::Must, id_range(f, after_seq, through_seq)));
    let q = and(clauses);
    let mut out: Vec<Hit> = Vec::new();
    for p in partitions {
        if p.committed() <= after_seq || !filter.overlaps(p) {
            continue;
        }
        let searcher = p.reader.searcher();
        let addrs: Vec<DocAddress> = match limit {
            Some(limit) => {
                let top = TopDocs::with_limit(limit.max(1))
                    .order_by((SortByStaticFastValue::<u64>::for_field("id"), Order::Asc));
                let found = searcher
                    .search(&*q, &top)
                    .map_err(tantivy_err("searching"))?;
                found.into_iter().map(|(_, a)| a).collect()
            }
            None => searcher
                .search(&*q, &DocSetCollector)
                .map_err(tantivy_err("searching"))?
                .into_iter()
                .collect(),
        };
        for addr in addrs {
            let d: TantivyDocument = searcher
                .doc(addr)
                .map_err(tantivy_err("reading a document"))?;
            let (record, id) = f.record(&d);
            out.push(Hit { id, record });
        }
    }
    out.sort_by_key(|h| h.id);
    if let Some(limit) = limit {
        out.truncate(limit);
    }
    Ok(out)
}
