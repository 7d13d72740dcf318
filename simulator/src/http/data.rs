//! The data API: versions, query with pagination, and limits.
//!
//! Every data call (query, query page, limits) goes through [`admit`]: injected faults first,
//! then the bearer token, then the daily allocation; only then is the call counted, as one
//! API request, and `Sforce-Limit-Info` reports the count including it. A query snapshots its
//! whole result when it runs; later pages read that snapshot through a locator owned by the
//! session that ran the query. The versions list needs no session and is not counted.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use super::{api_error, json, not_found_response, served_version, Usage, VERSIONS};
use crate::faults::InjectedFault;
use crate::org::builtin::CONNECTED_APP_NAME;
use crate::soql::exec::{self, OutRecord};
use crate::state::{Cursor, Shared};
use crate::view::View;
use crate::{sftime, soql};

/// The page Salesforce Edge shows while it cannot route to an org.
const EDGE_HTML: &str = "<html><head><title>Salesforce</title></head><body>We are setting \
                         things up. This process can take a few minutes. This page will \
                         auto-refresh when ready.</body></html>";

/// Smallest and largest batch sizes `Sforce-Query-Options` may ask for.
const BATCH_SIZE_RANGE: std::ops::RangeInclusive<usize> = 200..=2000;

/// `GET /services/data/`: the versions served.
pub(crate) async fn versions() -> Response {
    #[derive(Serialize)]
    struct Version {
        label: &'static str,
        url: String,
        version: &'static str,
    }
    let list: Vec<Version> = VERSIONS
        .iter()
        .map(|(label, version)| Version {
            label,
            url: format!("/services/data/v{version}"),
            version,
        })
        .collect();
    json(StatusCode::OK, &list, None)
}

/// A data call that passed the gate.
struct Admitted {
    token: String,
    usage: Usage,
}

/// Injected faults, session, allocation; then counts the call.
async fn admit(shared: &Shared, headers: &HeaderMap) -> Result<Admitted, Response> {
    // A slow org answers late whatever the answer is; a slow call later still.
    let (delay, slow, untouched) = {
        let mut state = shared.lock();
        let untouched = state.faults.pass_untouched();
        let slow = if untouched {
            None
        } else {
            state.faults.take_slow_call()
        };
        (state.faults.data_call_delay, slow, untouched)
    };
    for hold in [delay, slow].into_iter().flatten() {
        tokio::time::sleep(hold).await;
    }

    let mut state = shared.lock();
    let limit = shared.api_daily_limit;
    let usage = |used| Some(Usage { used, limit });
    let fault = if untouched { None } else { state.faults.take() };
    match fault {
        Some(InjectedFault::EdgeHtml) => return Err(edge_html()),
        Some(InjectedFault::ServerUnavailable) => {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let used = usage(state.api_calls);
            return Err(api_error(
                status,
                "SERVER_UNAVAILABLE",
                "Server Unavailable",
                used,
            ));
        }
        None => {}
    }

    // The session must exist and be within its inactivity timeout.
    let now = Instant::now();
    let token = bearer_token(headers);
    let Some(token) = token.filter(|t| state.live_session(t, now).is_some()) else {
        return Err(invalid_session(usage(state.api_calls)));
    };
    if state.api_calls >= limit {
        let message = "TotalRequests Limit exceeded.";
        let used = usage(state.api_calls);
        return Err(api_error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            message,
            used,
        ));
    }

    // Count the call, and end the session if a fault says it has made its last call.
    state.api_calls += 1;
    let expire_after = state.faults.expire_session_after_data_calls;
    if let Some(session) = state.sessions.get_mut(&token) {
        session.last_used = now;
        session.data_calls += 1;
        if expire_after.is_some_and(|n| session.data_calls >= n) {
            state.sessions.remove(&token);
        }
    }
    Ok(Admitted {
        token,
        usage: Usage {
            used: state.api_calls,
            limit,
        },
    })
}

/// The token of `Authorization: Bearer <token>` (or the older `OAuth <token>`).
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let known = scheme.eq_ignore_ascii_case("Bearer") || scheme.eq_ignore_ascii_case("OAuth");
    known
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn invalid_session(usage: Option<Usage>) -> Response {
    let message = "Session expired or invalid";
    api_error(
        StatusCode::UNAUTHORIZED,
        "INVALID_SESSION_ID",
        message,
        usage,
    )
}

fn invalid_locator(usage: Usage) -> Response {
    let message = "invalid query locator";
    api_error(
        StatusCode::BAD_REQUEST,
        "INVALID_QUERY_LOCATOR",
        message,
        Some(usage),
    )
}

fn edge_html() -> Response {
    let status = StatusCode::from_u16(420).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = (status, EDGE_HTML).into_response();
    let content_type = HeaderValue::from_static("text/html;charset=UTF-8");
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

/// Rows per page: the configured size, lowered by a `Sforce-Query-Options: batchSize=N`
/// header (clamped to 200..=2000 as Salesforce does).
fn page_size(configured: usize, headers: &HeaderMap) -> usize {
    let requested = headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split([';', ',']).find_map(|option| {
                let (key, value) = option.split_once('=')?;
                let is_batch = key.trim().eq_ignore_ascii_case("batchSize");
                is_batch
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
        });
    match requested {
        Some(n) => configured.min(n.clamp(*BATCH_SIZE_RANGE.start(), *BATCH_SIZE_RANGE.end())),
        None => configured,
    }
}

/// One page of a query result.
#[derive(Serialize)]
struct QueryPage<'a> {
    #[serde(rename = "totalSize")]
    total_size: usize,
    done: bool,
    #[serde(rename = "nextRecordsUrl", skip_serializing_if = "Option::is_none")]
    next_records_url: Option<String>,
    records: &'a [OutRecord],
}

/// The page starting at `offset`, with a link to the next one while rows remain.
fn page(
    records: &[OutRecord],
    offset: usize,
    page_size: usize,
    next_url: impl FnOnce(usize) -> String,
    usage: Usage,
) -> Response {
    let end = (offset + page_size).min(records.len());
    let more = end < records.len();
    let body = QueryPage {
        total_size: records.len(),
        done: !more,
        next_records_url: more.then(|| next_url(end)),
        records: &records[offset..end],
    };
    json(StatusCode::OK, &body, Some(usage))
}

/// `GET /services/data/vNN.N/query?q=<SOQL>`.
pub(crate) async fn query(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if served_version(&version).is_none() {
        return not_found_response();
    }
    let admitted = match admit(&shared, &headers).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let usage = admitted.usage;

    // The query text, decoded as a form value (so an unencoded `+` arrives as a space).
    let soql = raw.as_deref().and_then(|raw| {
        url::form_urlencoded::parse(raw.as_bytes())
            .find(|(key, _)| key == "q")
            .map(|(_, value)| value.into_owned())
    });
    let Some(soql) = soql.filter(|q| !q.trim().is_empty()) else {
        let message = "A query string has to be specified";
        return api_error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            message,
            Some(usage),
        );
    };

    // Compile and run against the org as it is now; the result is the query's snapshot.
    let page_size = page_size(shared.page_size, &headers);
    let mut state = shared.lock();
    let plan = match soql::compile(&soql, &state.faults.objects_without_access) {
        Ok(plan) => plan,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, e.code, &e.message, Some(usage)),
    };
    let records = exec::execute(&plan, &View::new(&state.org, sftime::now()), &version);
    let records = Arc::new(records);

    // Only a result longer than one page needs a cursor.
    let locator = (records.len() > page_size).then(|| {
        let session = admitted.token.clone();
        state.cursors.open(Cursor {
            session,
            records: Arc::clone(&records),
            page_size,
        })
    });
    drop(state);
    let next_url = |offset| {
        let locator = locator.as_deref().unwrap_or_default();
        format!("/services/data/{version}/query/{locator}-{offset}")
    };
    page(&records, 0, page_size, next_url, usage)
}

/// `GET /services/data/vNN.N/query/<locator>-<offset>`: a later page of a query.
pub(crate) async fn query_more(
    State(shared): State<Arc<Shared>>,
    Path((version, locator_offset)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if served_version(&version).is_none() {
        return not_found_response();
    }
    let admitted = match admit(&shared, &headers).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let usage = admitted.usage;
    let Some((locator, offset)) = locator_offset
        .rsplit_once('-')
        .and_then(|(locator, offset)| Some((locator, offset.parse::<usize>().ok()?)))
    else {
        return invalid_locator(usage);
    };

    // The locator must exist, belong to this session, and the offset fall inside the result.
    let state = shared.lock();
    let Some(cursor) = state.cursors.get(locator) else {
        return invalid_locator(usage);
    };
    if cursor.session != admitted.token {
        return invalid_session(Some(usage));
    }
    if offset == 0 || offset >= cursor.records.len() {
        return invalid_locator(usage);
    }
    let (records, page_size) = (Arc::clone(&cursor.records), cursor.page_size);
    drop(state);
    let next_url = |next| format!("/services/data/{version}/query/{locator}-{next}");
    page(&records, offset, page_size, next_url, usage)
}

/// `GET /services/data/vNN.N/limits`.
pub(crate) async fn limits(
    State(shared): State<Arc<Shared>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    if served_version(&version).is_none() {
        return not_found_response();
    }
    let usage = match admit(&shared, &headers).await {
        Ok(admitted) => admitted.usage,
        Err(refused) => return refused,
    };

    // Per-app entries sit next to Max and Remaining, as in real responses.
    let pair = |max: u64, remaining: u64| json!({ "Max": max, "Remaining": remaining });
    let mut daily = serde_json::Map::new();
    daily.insert("Max".into(), json!(usage.limit));
    daily.insert(
        "Remaining".into(),
        json!(usage.limit.saturating_sub(usage.used)),
    );
    for app in [
        "Dataloader Bulk",
        "Salesforce Mobile Dashboards",
        CONNECTED_APP_NAME,
    ] {
        daily.insert(app.into(), pair(0, 0));
    }
    let body = json!({
        "ConcurrentAsyncGetReportInstances": pair(200, 200),
        "ConcurrentSyncReportRuns": pair(20, 20),
        "DailyApiRequests": daily,
        "DailyAsyncApexExecutions": pair(250_000, 250_000),
        "DailyBulkApiBatches": pair(15_000, 15_000),
        "DailyBulkV2QueryJobs": pair(10_000, 10_000),
        "DataStorageMB": pair(1024, 871),
        "FileStorageMB": pair(2048, 1990),
        "HourlyODataCallout": pair(10_000, 10_000),
        "SingleEmail": pair(5000, 5000),
    });
    json(StatusCode::OK, &body, Some(usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_header_is_clamped_and_only_lowers_the_page() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("sforce-query-options", HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(page_size(2000, &HeaderMap::new()), 2000);
        assert_eq!(page_size(2000, &with("batchSize=500")), 500);
        assert_eq!(page_size(2000, &with("batchSize=5")), 200);
        assert_eq!(page_size(2000, &with("batchSize=9000")), 2000);
        assert_eq!(page_size(7, &with("batchSize=500")), 7);
        assert_eq!(page_size(2000, &with("junk")), 2000);
    }
}
