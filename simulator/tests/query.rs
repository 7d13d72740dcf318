//! The query resource: pagination, locators, incremental queries, error bodies, and record
//! shapes compared with the recorded responses.

mod common;

use std::collections::BTreeSet;

use chrono::{Duration, TimeZone, Utc};
use common::{assert_matches_fixture, fixture, ids_of, is_sf_date, is_sf_datetime, Sim, VERSION};
use seatwatch_simulator::{sftime, OrgSource, SimulatorConfig};
use serde_json::Value;

#[tokio::test]
async fn pages_cover_every_row_exactly_once() {
    let mut config = SimulatorConfig::for_tests();
    config.org = OrgSource::BuiltIn { users: 100 };
    config.page_size = 7;
    let sim = Sim::start(config).await;
    let token = sim.login().await;

    let pages = sim
        .query_all_pages(&token, "SELECT Id, Username FROM User ORDER BY Id")
        .await;
    let n: usize = 100;
    assert_eq!(pages.len(), n.div_ceil(7));
    let ids = ids_of(&pages);
    assert_eq!(ids.len(), n);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), n);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ORDER BY Id holds across pages"
    );
    for (i, page) in pages.iter().enumerate() {
        let last = i == pages.len() - 1;
        assert_eq!(page["totalSize"], n);
        assert_eq!(page["done"], last);
        assert_eq!(page.get("nextRecordsUrl").is_some(), !last, "page {i}");
        if !last {
            let next = page["nextRecordsUrl"].as_str().unwrap();
            assert!(
                next.starts_with(&format!("/services/data/{VERSION}/query/01g")),
                "{next}"
            );
            assert!(next.ends_with(&format!("-{}", (i + 1) * 7)));
        }
    }
}

#[tokio::test]
async fn batch_size_header_sets_the_page_within_200_to_2000() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    let soql = "SELECT Id FROM User";
    let sizes = |pages: &[Value]| -> Vec<usize> {
        pages
            .iter()
            .map(|p| p["records"].as_array().unwrap().len())
            .collect()
    };

    // No header: one page of all 1,200 users.
    let pages = sim.query_all_pages(&token, soql).await;
    assert_eq!(sizes(&pages), vec![1200]);

    // batchSize=500, then batchSize=50 (raised to 200).
    for (header, expected) in [
        ("batchSize=500", vec![500, 500, 200]),
        ("batchSize=50", vec![200; 6]),
    ] {
        let response = sim
            .query_with(&token, soql, &[("Sforce-Query-Options", header)])
            .await;
        let mut pages = vec![response.json::<Value>().await.unwrap()];
        while let Some(next) = pages.last().unwrap()["nextRecordsUrl"].as_str() {
            let next = next.to_owned();
            pages.push(sim.get(&token, &next).await.json().await.unwrap());
        }
        assert_eq!(sizes(&pages), expected, "{header}");
        assert_eq!(ids_of(&pages).iter().collect::<BTreeSet<_>>().len(), 1200);
    }
}

#[tokio::test]
async fn a_locator_belongs_to_its_session() {
    let mut config = SimulatorConfig::for_tests();
    config.page_size = 300;
    let sim = Sim::start(config).await;
    let first = sim.login().await;
    let second = sim.login().await;
    let page = sim.query_ok(&first, "SELECT Id FROM User").await;
    let next = page["nextRecordsUrl"].as_str().unwrap().to_owned();

    // Another live session may not read it; the owner may, more than once.
    assert_matches_fixture(
        sim.get(&second, &next).await,
        "error_invalid_session_id.json",
    )
    .await;
    assert_eq!(sim.get(&first, &next).await.status(), 200);
    assert_eq!(sim.get(&first, &next).await.status(), 200);

    // After the session ends, neither its token nor its locator works.
    sim.running.handle().expire_sessions();
    assert_matches_fixture(
        sim.get(&first, &next).await,
        "error_invalid_session_id.json",
    )
    .await;

    // An unknown locator for a live session is INVALID_QUERY_LOCATOR.
    let third = sim.login().await;
    let bogus = format!("/services/data/{VERSION}/query/01g5g0000000000AAA-300");
    let response = sim.get(&third, &bogus).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "INVALID_QUERY_LOCATOR");
}

#[tokio::test]
async fn results_are_snapshotted_when_the_query_runs() {
    let mut config = SimulatorConfig::for_tests();
    config.page_size = 200;
    let sim = Sim::start(config).await;
    let token = sim.login().await;
    let soql = "SELECT Id, IsActive FROM User WHERE IsActive = true ORDER BY Id";
    let first = sim.query_ok(&token, soql).await;
    let total = first["totalSize"].as_u64().unwrap() as usize;

    // Deactivate every active user except the integration user between pages.
    sim.running.handle().with_org(|org| {
        let now = sftime::now();
        let ids: Vec<String> = org
            .users
            .iter()
            .skip(1)
            .filter(|u| u.is_active)
            .map(|u| u.id.clone())
            .collect();
        for id in ids {
            org.set_user_active(&id, false, now).unwrap();
        }
    });
    let mut pages = vec![first];
    while let Some(next) = pages.last().unwrap()["nextRecordsUrl"].as_str() {
        let next = next.to_owned();
        pages.push(sim.get(&token, &next).await.json().await.unwrap());
    }
    assert_eq!(ids_of(&pages).len(), total);
    assert!(pages.iter().all(|p| p["totalSize"] == total));
    let again = sim.query_ok(&token, soql).await;
    assert_eq!(again["totalSize"], 1);
}

#[tokio::test]
async fn incremental_query_with_tie_break_returns_exactly_the_rows_after_the_cursor() {
    let sim = Sim::default().await;
    let token = sim.login().await;

    // Give twelve users the same SystemModstamp so the tie-break matters.
    let tie = Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap();
    sim.running.handle().with_org(|org| {
        for user in org.users.iter_mut().skip(100).take(12) {
            user.system_modstamp = tie;
        }
    });
    let all = sim
        .query_all_pages(
            &token,
            "SELECT Id, SystemModstamp FROM User ORDER BY SystemModstamp, Id",
        )
        .await;
    let ordered: Vec<(String, String)> = all
        .iter()
        .flat_map(|p| p["records"].as_array().unwrap().clone())
        .map(|r| {
            (
                r["SystemModstamp"].as_str().unwrap().to_owned(),
                r["Id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let tied: Vec<&(String, String)> = ordered
        .iter()
        .filter(|(ts, _)| ts == "2024-05-01T00:00:00.000+0000")
        .collect();
    assert_eq!(tied.len(), 12);

    // The cursor sits on the fourth tied row; everything after it must come back.
    let cursor_id = &tied[3].1;
    let position = ordered.iter().position(|(_, id)| id == cursor_id).unwrap();
    let expected: Vec<String> = ordered[position + 1..]
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    for literal in [
        "2024-05-01T00:00:00Z",
        "2024-05-01T00:00:00+00:00",
        "2024-05-01T00:00:00.000+0000",
    ] {
        let soql = format!(
            "SELECT Id, SystemModstamp FROM User WHERE (SystemModstamp = {literal} AND Id > \
             '{cursor_id}') OR SystemModstamp > {literal} ORDER BY SystemModstamp, Id"
        );
        let pages = sim.query_all_pages(&token, &soql).await;
        assert_eq!(ids_of(&pages), expected, "{literal}");
    }
}

#[tokio::test]
async fn login_history_pages_in_login_time_order_from_a_cursor() {
    let mut config = SimulatorConfig::for_tests();
    config.page_size = 50;
    let sim = Sim::start(config).await;
    let token = sim.login().await;

    let (rows, failed): (Vec<(String, String)>, usize) = sim.running.handle().with_org(|org| {
        let mut rows: Vec<_> = org
            .login_history
            .iter()
            .map(|r| (r.login_time, r.id.clone()))
            .collect();
        rows.sort();
        let rows = rows
            .into_iter()
            .map(|(at, id)| (sftime::datetime(&at), id))
            .collect();
        let failed = org
            .login_history
            .iter()
            .filter(|r| r.status != "Success")
            .count();
        (rows, failed)
    });
    assert!(rows.len() > 100, "a month of logins: {}", rows.len());
    assert!(failed > 0, "some logins failed");

    // From the middle row on, with `>=` and then strictly after it with the id tie-break.
    let (at, id) = rows[rows.len() / 2].clone();
    let from: Vec<String> = rows
        .iter()
        .filter(|(t, _)| *t >= at)
        .map(|(_, i)| i.clone())
        .collect();
    let soql = format!(
        "SELECT Id, UserId, LoginTime, Status FROM LoginHistory WHERE LoginTime >= {at} \
         ORDER BY LoginTime, Id"
    );
    let pages = sim.query_all_pages(&token, &soql).await;
    assert!(pages.len() > 1, "paginated");
    assert_eq!(ids_of(&pages), from);

    let position = rows.iter().position(|(_, i)| *i == id).unwrap();
    let after: Vec<String> = rows[position + 1..]
        .iter()
        .map(|(_, i)| i.clone())
        .collect();
    let soql = format!(
        "SELECT Id, LoginTime FROM LoginHistory WHERE (LoginTime = {at} AND Id > '{id}') \
         OR LoginTime > {at} ORDER BY LoginTime, Id"
    );
    assert_eq!(ids_of(&sim.query_all_pages(&token, &soql).await), after);
}

#[tokio::test]
async fn query_errors_equal_the_recorded_responses() {
    let sim = Sim::default().await;
    let token = sim.login().await;

    // An unencoded `+` in the URL arrives as a space.
    let raw = "SELECT+Id,+Email+FROM+User+WHERE+SystemModstamp+>+2024-05-01T12:34:56.000+0000";
    let url = format!("/services/data/{VERSION}/query?q={raw}");
    assert_matches_fixture(sim.get(&token, &url).await, "error_malformed_query.json").await;
    let encoded = "SELECT Id, Email FROM User WHERE SystemModstamp > 2024-05-01T12:34:56.000+0000";
    assert_eq!(sim.query(&token, encoded).await.status(), 200);

    let response = sim
        .query(&token, "SELECT Id, UsedSeats FROM UserLicense")
        .await;
    assert_matches_fixture(response, "error_invalid_field.json").await;

    // LoginHistory without permission reads as an unsupported type.
    sim.running.handle().with_faults(|f| {
        f.objects_without_access.insert("LoginHistory".into());
    });
    let response = sim.query(&token, "SELECT Id FROM LoginHistory").await;
    assert_matches_fixture(response, "error_invalid_type.json").await;

    // Without a session, or with a bad one.
    for token in ["", "00D000000000000!nope"] {
        let response = sim.query(token, "SELECT Id FROM User").await;
        assert_matches_fixture(response, "error_invalid_session_id.json").await;
    }
    let response = sim
        .client
        .get(format!("{}/services/data/{VERSION}/query", sim.base))
        .query(&[("q", "SELECT Id FROM User")])
        .send()
        .await
        .unwrap();
    assert_matches_fixture(response, "error_invalid_session_id.json").await;
}

/// Runs a query expected to fail and returns (status, errorCode, message).
async fn failure(sim: &Sim, token: &str, soql: &str) -> (u16, String, String) {
    let response = sim.query(token, soql).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let error = &body.as_array().expect("errors are a JSON array")[0];
    (
        status,
        error["errorCode"].as_str().unwrap().into(),
        error["message"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn unsupported_or_wrong_queries_are_refused_not_ignored() {
    let sim = Sim::default().await;
    let token = sim.login().await;

    let (status, code, message) = failure(&sim, &token, "SELECT Id FROM Widget").await;
    assert_eq!((status, code.as_str()), (400, "INVALID_TYPE"));
    assert_eq!(
        message,
        "\nSELECT Id FROM Widget\n               ^\nERROR at Row:1:Column:16\nsObject type \
         'Widget' is not supported. If you are attempting to use a custom object, be sure to \
         append the '__c' after the entity name. Please reference your WSDL or the describe \
         call for the appropriate names."
    );

    let soql = "SELECT Id FROM LoginHistory WHERE Status = 'Success'";
    let (status, code, message) = failure(&sim, &token, soql).await;
    assert_eq!((status, code.as_str()), (400, "INVALID_FIELD"));
    assert!(
        message.ends_with("\nfield 'Status' can not be filtered in a query call"),
        "{message}"
    );

    for soql in [
        "SELECT Id FROM User WHERE Username LIKE 'a%'",
        "SELECT COUNT() FROM User",
        "SELECT Id FROM User WHERE IsActive = true AND Id != null OR Id = null",
        "SELECT Id FROM User LIMIT 5 OFFSET 2",
        "SELECT Id FROM User WHERE LastLoginDate = LAST_N_DAYS:30",
        "SELECT Id FROM User GROUP BY Id",
        "SELECT Id FROM User WHERE",
    ] {
        let (status, code, message) = failure(&sim, &token, soql).await;
        assert_eq!((status, code.as_str()), (400, "MALFORMED_QUERY"), "{soql}");
        assert!(message.contains("ERROR at Row:1:Column:"), "{message}");
    }

    for soql in [
        "SELECT Id, Nope FROM User",
        "SELECT Manager.Nope FROM User",
        "SELECT Nope.Name FROM User",
        "SELECT Id FROM User WHERE CreatedDate > '2024-01-01'",
        "SELECT Id FROM User ORDER BY Nope",
    ] {
        let (_, code, _) = failure(&sim, &token, soql).await;
        assert_eq!(code, "INVALID_FIELD", "{soql}");
    }
}

/// The SOQL a recorded query used: from its request URL, else from its record keys.
fn soql_of(recorded: &Value) -> String {
    if let Some(url) = recorded["request"]["url"]
        .as_str()
        .filter(|u| u.contains("q="))
    {
        let query = url.split_once('?').unwrap().1;
        let (_, q) = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "q")
            .unwrap();
        return q.into_owned();
    }
    let first = &recorded["body"]["records"][0];
    let object = first["attributes"]["type"].as_str().unwrap();
    format!("SELECT {} FROM {object}", paths(first, "").join(", "))
}

/// The dotted field paths a record carries.
fn paths(record: &Value, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in record.as_object().unwrap() {
        match value {
            _ if key == "attributes" => {}
            Value::Object(_) => out.extend(paths(value, &format!("{prefix}{key}."))),
            _ => out.push(format!("{prefix}{key}")),
        }
    }
    out
}

/// Asserts that two records have the same keys at every level and compatible value types.
fn assert_same_shape(got: &Value, want: &Value, context: &str) {
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(keys(got), keys(want), "{context}");
    for (key, want_value) in want.as_object().unwrap() {
        let got_value = &got[key];
        let here = format!("{context}.{key}");
        match (got_value, want_value) {
            (Value::Object(_), Value::Object(_)) => assert_same_shape(got_value, want_value, &here),
            (Value::Null, _) | (_, Value::Null) => {}
            (Value::String(g), Value::String(w)) => {
                assert_eq!(is_sf_datetime(g), is_sf_datetime(w), "{here}: {g} vs {w}");
                assert_eq!(is_sf_date(g), is_sf_date(w), "{here}: {g} vs {w}");
            }
            (Value::Number(g), Value::Number(w)) => assert_eq!(g.is_i64(), w.is_i64(), "{here}"),
            (g, w) => assert_eq!(
                std::mem::discriminant(g),
                std::mem::discriminant(w),
                "{here}"
            ),
        }
    }
}

#[tokio::test]
async fn records_have_the_recorded_shapes() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    for name in [
        "query_userlicense_page1.json",
        "query_userlicense_page2.json",
        "query_permissionsetlicense.json",
        "query_packagelicense.json",
        "query_permissionsetlicenseassign.json",
        "query_userpackagelicense.json",
        "query_user_with_profile_license.json",
        "query_loginhistory.json",
    ] {
        let recorded = fixture(name);
        let soql = soql_of(&recorded);
        let response = sim.query(&token, &soql).await;
        assert_eq!(
            response.headers()["content-type"],
            "application/json;charset=UTF-8"
        );
        let body: Value = response.json().await.unwrap();
        let records = body["records"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {body}"));
        assert!(!records.is_empty(), "{name}: {soql} found nothing");
        let want = &recorded["body"]["records"][0];
        for record in records {
            assert_same_shape(record, want, name);
            assert!(record["attributes"]["url"]
                .as_str()
                .unwrap()
                .starts_with(&format!("/services/data/{VERSION}/sobjects/")));
        }
        let page_keys: BTreeSet<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            page_keys,
            BTreeSet::from(["totalSize", "done", "records"]),
            "{name}"
        );
    }
}

#[tokio::test]
async fn relationships_nest_and_null_lookups_are_null() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    let body = sim
        .query_ok(
            &token,
            "select id, username, managerid, manager.username, profile.name, \
             PROFILE.userlicense.LICENSEDEFINITIONKEY from user where isactive = TRUE",
        )
        .await;
    let records = body["records"].as_array().unwrap();
    let with_manager = records.iter().find(|r| !r["ManagerId"].is_null()).unwrap();
    let without = records.iter().find(|r| r["ManagerId"].is_null()).unwrap();
    assert!(without["Manager"].is_null() && without.get("Manager").is_some());
    assert_eq!(with_manager["Manager"]["attributes"]["type"], "User");
    assert!(with_manager["Manager"]["attributes"]["url"]
        .as_str()
        .unwrap()
        .ends_with(with_manager["ManagerId"].as_str().unwrap()));
    assert!(with_manager["Manager"]["Username"].is_string());
    let licence = &with_manager["Profile"]["UserLicense"];
    assert_eq!(licence["attributes"]["type"], "UserLicense");
    assert!(licence["LicenseDefinitionKey"].is_string());
    let keys: Vec<&str> = with_manager
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(keys.contains(&"Username") && keys.contains(&"Profile") && !keys.contains(&"username"));
}

#[tokio::test]
async fn seat_counts_follow_changes_and_changes_bump_system_modstamp() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    let soql = "SELECT Id, UsedLicenses, TotalLicenses FROM UserLicense WHERE \
                LicenseDefinitionKey = 'SFDC'";
    let used = |body: &Value| body["records"][0]["UsedLicenses"].as_i64().unwrap();
    let before = used(&sim.query_ok(&token, soql).await);
    assert_eq!(before, 290);

    // Deactivate one Salesforce user: one seat frees up and the user's modstamp moves.
    let now = sftime::now() + Duration::seconds(5);
    let id = sim.running.handle().with_org(|org| {
        let sfdc = org.user_license_by_key("SFDC").unwrap().id.clone();
        let id = org.active_users_of_license(&sfdc)[5].id.clone();
        org.set_user_active(&id, false, now).unwrap();
        id
    });
    assert_eq!(used(&sim.query_ok(&token, soql).await), before - 1);
    let user = sim
        .query_ok(
            &token,
            &format!("SELECT Id, IsActive, SystemModstamp FROM User WHERE Id = '{id}'"),
        )
        .await;
    assert_eq!(user["records"][0]["IsActive"], false);
    assert_eq!(user["records"][0]["SystemModstamp"], sftime::datetime(&now));

    // A 15-character id literal finds the same user.
    let short = sim
        .query_ok(
            &token,
            &format!("SELECT Id FROM User WHERE Id IN ('{}')", &id[..15]),
        )
        .await;
    assert_eq!(short["totalSize"], 1);
}
