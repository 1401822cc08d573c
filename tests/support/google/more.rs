//! events.patch, events.quickAdd and events.instances on the calendars of `google.rs`: a patch
//! changes only the fields it sends (what events.get returns next); with `attendeesOmitted` it
//! sets the responses of the attendees it names, and only the organizer may name someone who
//! is not a guest or answer for someone else (403 `forbiddenForNonOrganizer`); a quick-added
//! event is listed by events.list; instances exist only for a recurring event (`kwstandup`).

use axum::response::Response;
use chrono::{Duration as ChronoDuration, NaiveDate, NaiveTime, Utc};
use serde_json::{json, Map, Value};

use super::super::{json_response, lock, GOOGLE_EMAIL};
use super::{
    add_event, bad_request, event_view, events_page, gerr, max_results, not_found,
    page_token_decode, parse_time_param, parse_when, rfc3339_in, send_updates_check, writer_check,
    Ctx, Event, READ_EVENTS, WRITE_EVENTS,
};

fn forbidden_for_non_organizer() -> Response {
    gerr(
        403,
        "The operation can only be performed by the organizer of the event.",
        "forbiddenForNonOrganizer",
        "calendar",
        "PERMISSION_DENIED",
    )
}

fn attendee_email(a: &Value) -> &str {
    a.get("email").and_then(Value::as_str).unwrap_or("")
}

/// Set the responses of the attendees `given` names (`attendeesOmitted`).
fn set_responses(e: &mut Event, given: &[Value]) -> Result<(), Response> {
    let organizer = e.json["organizer"]["email"].as_str() == Some(GOOGLE_EMAIL);
    let mut list: Vec<Value> = e.json["attendees"].as_array().cloned().unwrap_or_default();
    for g in given {
        let email = attendee_email(g);
        if !email.contains('@') {
            return Err(bad_request("Invalid attendee email.", "invalid"));
        }
        let status = g.get("responseStatus").and_then(Value::as_str);
        if let Some(s) = status {
            if !matches!(s, "needsAction" | "declined" | "tentative" | "accepted") {
                return Err(bad_request("Invalid value for: responseStatus", "invalid"));
            }
        }
        let slot = list
            .iter_mut()
            .find(|a| attendee_email(a).eq_ignore_ascii_case(email));
        if !organizer && (slot.is_none() || !email.eq_ignore_ascii_case(GOOGLE_EMAIL)) {
            return Err(forbidden_for_non_organizer());
        }
        let attendee = match slot {
            Some(a) => a,
            None => {
                list.push(json!({ "email": email, "responseStatus": "needsAction" }));
                list.last_mut().expect("just pushed")
            }
        };
        if let Value::Object(a) = attendee {
            if let Some(s) = status {
                a.insert("responseStatus".into(), json!(s));
            }
            match g.get("comment").and_then(Value::as_str) {
                Some(c) => {
                    a.insert("comment".into(), json!(c));
                }
                None => {
                    a.remove("comment");
                }
            }
            if email.eq_ignore_ascii_case(GOOGLE_EMAIL) {
                a.insert("self".into(), json!(true));
            }
        }
    }
    if let Value::Object(o) = &mut e.json {
        o.insert("attendees".into(), Value::Array(list));
    }
    Ok(())
}

/// The attendee list a patch sets: the emails given, keeping the responses of those already
/// invited.
fn replace_attendees(e: &mut Event, given: &[Value]) -> Result<(), Response> {
    let old: Vec<Value> = e.json["attendees"].as_array().cloned().unwrap_or_default();
    let mut list = Vec::new();
    for g in given {
        let email = attendee_email(g);
        if !email.contains('@') {
            return Err(bad_request("Invalid attendee email.", "invalid"));
        }
        list.push(
            old.iter()
                .find(|a| attendee_email(a).eq_ignore_ascii_case(email))
                .cloned()
                .unwrap_or_else(|| json!({ "email": email, "responseStatus": "needsAction" })),
        );
    }
    if let Value::Object(o) = &mut e.json {
        if list.is_empty() {
            o.remove("attendees");
        } else {
            o.insert("attendees".into(), Value::Array(list));
        }
    }
    Ok(())
}

/// A patch's `start`/`end` merged into the event's (Google merges objects in a patch): a
/// lone `timeZone` keeps the time; a `date` replaces a `dateTime` and the other way round.
fn merged_when(old: &Value, given: &Value) -> Value {
    let (Value::Object(old), Value::Object(given)) = (old, given) else {
        return given.clone();
    };
    let mut out = old.clone();
    if given.contains_key("date") {
        out.remove("dateTime");
        out.remove("timeZone");
    }
    if given.contains_key("dateTime") {
        out.remove("date");
    }
    out.extend(given.clone());
    Value::Object(out)
}

/// `PATCH …/events/{eventId}`: the fields sent replace the event's, the rest stay.
pub(super) fn patch_event(ctx: &Ctx, cal: &str, ev: &str) -> Result<Response, Response> {
    let mut data = lock(&ctx.st.data);
    let idx = data.google.index_of(cal).ok_or_else(not_found)?;
    ctx.allowed(WRITE_EVENTS)?;
    send_updates_check(ctx)?;
    let c = &mut data.google.calendars[idx];
    let Some(Value::Object(body)) = ctx.r.json() else {
        return Err(bad_request("Parse Error", "parseError"));
    };
    let responses_only = body.get("attendeesOmitted") == Some(&Value::Bool(true));
    if !responses_only {
        writer_check(c)?;
    }
    let e = c
        .events
        .iter_mut()
        .find(|e| e.id == ev && !e.cancelled)
        .ok_or_else(not_found)?;
    let mut updated = e.clone();
    for key in [
        "summary",
        "description",
        "location",
        "transparency",
        "visibility",
        "colorId",
    ] {
        if let (Some(v), Value::Object(o)) = (body.get(key), &mut updated.json) {
            match v {
                Value::Null => {
                    o.remove(key);
                }
                Value::String(_) => {
                    o.insert(key.into(), v.clone());
                }
                _ => return Err(bad_request(&format!("Invalid value for: {key}"), "invalid")),
            }
        }
    }
    let mut moved = false;
    for which in ["start", "end"] {
        let Some(given) = body.get(which) else {
            continue;
        };
        let (t, obj, _) = parse_when(Some(&merged_when(&updated.json[which], given)), which)?;
        if which == "start" {
            updated.start = t;
        } else {
            updated.end = t;
        }
        updated.json[which] = obj;
        moved = true;
    }
    if updated.end <= updated.start {
        return Err(bad_request(
            "The specified time range is empty.",
            "timeRangeEmpty",
        ));
    }
    match body.get("attendees") {
        None => {}
        Some(Value::Array(given)) if responses_only => set_responses(&mut updated, given)?,
        Some(Value::Array(given)) => replace_attendees(&mut updated, given)?,
        Some(_) => return Err(bad_request("Invalid value for: attendees", "invalid")),
    }
    let now = Utc::now();
    updated.updated = now;
    updated.transparent = updated.json["transparency"] == "transparent";
    updated.text = format!(
        "{} {} {}",
        updated.json["summary"].as_str().unwrap_or(""),
        updated.json["description"].as_str().unwrap_or(""),
        updated.json["location"].as_str().unwrap_or("")
    )
    .to_lowercase();
    if let Value::Object(o) = &mut updated.json {
        o.insert(
            "updated".into(),
            json!(now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
        );
        o.insert(
            "etag".into(),
            json!(format!("\"{}\"", now.timestamp_micros())),
        );
        if moved {
            let sequence = o.get("sequence").and_then(Value::as_u64).unwrap_or(0);
            o.insert("sequence".into(), json!(sequence + 1));
        }
    }
    *e = updated;
    Ok(json_response(200, &event_view(e)))
}

/// What quickAdd reads from its text: a date (`YYYY-MM-DD`, `today`, `tomorrow`), a time
/// (`14:30`, `3pm`, `9:15am`); the other words are the summary. No time: an all-day event.
fn parse_quick(text: &str, today: NaiveDate) -> (String, NaiveDate, Option<NaiveTime>) {
    let mut date = today;
    let mut time = None;
    let mut words = Vec::new();
    for word in text.split_whitespace() {
        let lower = word.to_ascii_lowercase();
        let clock = |s: &str| {
            let (hm, pm) = match (s.strip_suffix("pm"), s.strip_suffix("am")) {
                (Some(x), _) => (x, Some(true)),
                (_, Some(x)) => (x, Some(false)),
                _ => (s, None),
            };
            let (h, m) = hm.split_once(':').unwrap_or((hm, "0"));
            let (mut h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            if pm.is_none() && !hm.contains(':') {
                return None;
            }
            if pm == Some(true) && h < 12 {
                h += 12;
            }
            if pm == Some(false) && h == 12 {
                h = 0;
            }
            NaiveTime::from_hms_opt(h, m, 0)
        };
        if let Ok(d) = NaiveDate::parse_from_str(&lower, "%Y-%m-%d") {
            date = d;
        } else if lower == "today" {
            date = today;
        } else if lower == "tomorrow" {
            date = today + ChronoDuration::days(1);
        } else if let Some(t) = clock(&lower) {
            time = Some(t);
        } else if !matches!(lower.as_str(), "at" | "on") {
            words.push(word);
        }
    }
    (words.join(" "), date, time)
}

/// `POST …/events/quickAdd?text=…`: an event from a sentence (see [`parse_quick`]), an hour
/// long, in the calendar's time zone.
pub(super) fn quick_add(ctx: &Ctx, cal: &str) -> Result<Response, Response> {
    let mut data = lock(&ctx.st.data);
    let idx = data.google.index_of(cal).ok_or_else(not_found)?;
    ctx.allowed(WRITE_EVENTS)?;
    let c = &mut data.google.calendars[idx];
    writer_check(c)?;
    send_updates_check(ctx)?;
    let text = ctx
        .r
        .query_get("text")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| bad_request("Required parameter: text", "required"))?;
    let offset = ChronoDuration::minutes(i64::from(c.offset_minutes));
    let today = (Utc::now() + offset).date_naive();
    let (summary, date, time) = parse_quick(text, today);
    let mut body = Map::new();
    body.insert("summary".into(), json!(summary));
    match time {
        Some(t) => {
            let start = date.and_time(t).and_utc() - offset;
            for (key, at) in [("start", start), ("end", start + ChronoDuration::hours(1))] {
                body.insert(
                    key.into(),
                    json!({ "dateTime": rfc3339_in(at, c.offset_minutes), "timeZone": c.tz }),
                );
            }
        }
        None => {
            body.insert(
                "start".into(),
                json!({ "date": date.format("%Y-%m-%d").to_string() }),
            );
            let next = date + ChronoDuration::days(1);
            body.insert(
                "end".into(),
                json!({ "date": next.format("%Y-%m-%d").to_string() }),
            );
        }
    }
    Ok(json_response(200, &add_event(c, &body)?))
}

/// `GET …/events/{eventId}/instances`: the occurrences of a recurring event, paged; 404 for an
/// event that does not recur or does not exist.
pub(super) fn instances(ctx: &Ctx, cal: &str, ev: &str) -> Result<Response, Response> {
    let data = lock(&ctx.st.data);
    let idx = data.google.index_of(cal).ok_or_else(not_found)?;
    ctx.allowed(READ_EVENTS)?;
    let c = &data.google.calendars[idx];
    let series: Vec<&Event> = c
        .events
        .iter()
        .filter(|e| e.recurring.as_deref() == Some(ev))
        .collect();
    if series.is_empty() {
        return Err(not_found());
    }
    let time_min = parse_time_param(ctx, "timeMin")?;
    let time_max = parse_time_param(ctx, "timeMax")?;
    let max = max_results(ctx, 250, 2500)?;
    let offset = match ctx.r.query_get("pageToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => page_token_decode(t)
            .ok_or_else(|| bad_request("Invalid page token value.", "invalid"))?,
    };
    let mut matched: Vec<&Event> = series
        .into_iter()
        .filter(|e| !e.cancelled)
        .filter(|e| time_min.is_none_or(|t| e.end > t))
        .filter(|e| time_max.is_none_or(|t| e.start < t))
        .collect();
    matched.sort_by_key(|e| e.start);
    let items: Vec<Value> = matched.into_iter().map(event_view).collect();
    Ok(json_response(200, &events_page(c, &items, offset, max)))
}
