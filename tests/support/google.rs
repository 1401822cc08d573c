//! The Google Calendar API v3 under `/google/calendar/v3`.
//!
//! Calendars: `primary` = `tester@example.com` (owner, Europe/Berlin, ~30 events in January and
//! February 2025 incl. a daily standup series, an all-day offsite and a "transparent" focus
//! block), `team@example.com` (writer, America/New_York, 9 events) and
//! `en.usa#holiday@group.v.calendar.google.com` (reader: writes answer 403). Errors have
//! Google's shape `{"error": {"code", "message", "errors": [...], "status"}}`.

#![allow(clippy::result_large_err)]

/// The methods of the tools issue 16 added: events.patch (updates and responses),
/// events.quickAdd and events.instances.
mod more;

use axum::response::Response;
use base64::Engine;
use chrono::{
    DateTime, Duration as ChronoDuration, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc,
};
use serde_json::{json, Map, Value};

use super::oauth::TokenStatus;
use super::{
    empty_response, json_response, lock, random_string, set_header, Provider, Req, SharedState,
    GOOGLE_EMAIL, GOOGLE_SCOPE_PREFIX,
};

/// The fixture events lie between these instants.
pub const GOOGLE_EVENTS_FROM: &str = "2025-01-01T00:00:00Z";
pub const GOOGLE_EVENTS_UNTIL: &str = "2025-06-01T00:00:00Z";
pub const TEAM_CALENDAR: &str = "team@example.com";
pub const HOLIDAY_CALENDAR: &str = "en.usa#holiday@group.v.calendar.google.com";

#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub id: String,
    pub json: Value,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub cancelled: bool,
    pub transparent: bool,
    pub updated: DateTime<Utc>,
    pub text: String,
    pub recurring: Option<String>,
}

pub(crate) struct Calendar {
    pub id: String,
    pub summary: String,
    pub description: String,
    pub tz: String,
    pub offset_minutes: i32,
    pub access_role: &'static str,
    pub primary: bool,
    pub color: (&'static str, &'static str, &'static str),
    pub events: Vec<Event>,
}

pub(crate) struct GoogleData {
    pub calendars: Vec<Calendar>,
}

fn rfc3339_in(t: DateTime<Utc>, offset_minutes: i32) -> String {
    if offset_minutes == 0 {
        return t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    }
    let tz =
        FixedOffset::east_opt(offset_minutes * 60).unwrap_or(FixedOffset::east_opt(0).unwrap());
    t.with_timezone(&tz)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

fn millis_z(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .unwrap_or_default()
}

fn html_link(id: &str, cal: &str) -> String {
    let eid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id} {cal}"));
    format!("https://www.google.com/calendar/event?eid={eid}")
}

struct Spec<'a> {
    id: String,
    summary: &'a str,
    description: Option<&'a str>,
    location: Option<&'a str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    all_day: bool,
    organizer: &'a str,
    attendees: &'a [&'a str],
    recurring: Option<&'a str>,
    meet: bool,
    transparent: bool,
}

fn build_event(cal_id: &str, tz: &str, offset: i32, s: Spec) -> Event {
    let date_obj = |t: DateTime<Utc>| {
        if s.all_day {
            json!({ "date": t.format("%Y-%m-%d").to_string() })
        } else {
            json!({ "dateTime": rfc3339_in(t, offset), "timeZone": tz })
        }
    };
    let owner = if cal_id == "primary" {
        GOOGLE_EMAIL
    } else {
        cal_id
    };
    let mut m = Map::new();
    m.insert("kind".into(), json!("calendar#event"));
    m.insert(
        "etag".into(),
        json!(format!(
            "\"{}\"",
            3_400_000_000_000_000u64 + super::fnv(&[&s.id]) % 100_000_000_000_000
        )),
    );
    m.insert("id".into(), json!(s.id));
    m.insert("status".into(), json!("confirmed"));
    m.insert("htmlLink".into(), json!(html_link(&s.id, owner)));
    m.insert("created".into(), json!("2024-12-01T10:00:00.000Z"));
    m.insert("updated".into(), json!("2024-12-15T12:30:00.000Z"));
    m.insert("summary".into(), json!(s.summary));
    if let Some(d) = s.description {
        m.insert("description".into(), json!(d));
    }
    if let Some(l) = s.location {
        m.insert("location".into(), json!(l));
    }
    m.insert(
        "creator".into(),
        json!({ "email": s.organizer, "self": s.organizer == owner }),
    );
    m.insert(
        "organizer".into(),
        json!({ "email": s.organizer, "self": s.organizer == owner }),
    );
    m.insert("start".into(), date_obj(s.start));
    m.insert("end".into(), date_obj(s.end));
    if s.transparent {
        m.insert("transparency".into(), json!("transparent"));
    }
    if let Some(r) = s.recurring {
        m.insert("recurringEventId".into(), json!(r));
        m.insert("originalStartTime".into(), date_obj(s.start));
    }
    m.insert(
        "iCalUID".into(),
        json!(format!("{}@google.com", s.recurring.unwrap_or(&s.id))),
    );
    m.insert("sequence".into(), json!(0));
    if !s.attendees.is_empty() {
        let list: Vec<Value> = s
            .attendees
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut att = Map::new();
                att.insert("email".into(), json!(a));
                if *a == s.organizer {
                    att.insert("organizer".into(), json!(true));
                }
                if *a == owner {
                    att.insert("self".into(), json!(true));
                }
                let status = if *a == s.organizer {
                    "accepted"
                } else {
                    ["accepted", "needsAction", "tentative", "declined"][i % 4]
                };
                att.insert("responseStatus".into(), json!(status));
                Value::Object(att)
            })
            .collect();
        m.insert("attendees".into(), Value::Array(list));
    }
    if s.meet {
        m.insert(
            "hangoutLink".into(),
            json!("https://meet.google.com/kwf-akem-eet"),
        );
    }
    m.insert("reminders".into(), json!({ "useDefault": true }));
    m.insert("eventType".into(), json!("default"));
    let text = format!(
        "{} {} {}",
        s.summary,
        s.description.unwrap_or(""),
        s.location.unwrap_or("")
    )
    .to_lowercase();
    Event {
        id: s.id,
        json: Value::Object(m),
        start: s.start,
        end: s.end,
        cancelled: false,
        transparent: s.transparent,
        updated: utc(2024, 12, 15, 12, 30),
        text,
        recurring: s.recurring.map(str::to_string),
    }
}

fn spec<'a>(
    id: String,
    summary: &'a str,
    start: DateTime<Utc>,
    minutes: i64,
    organizer: &'a str,
) -> Spec<'a> {
    Spec {
        id,
        summary,
        description: None,
        location: None,
        start,
        end: start + ChronoDuration::minutes(minutes),
        all_day: false,
        organizer,
        attendees: &[],
        recurring: None,
        meet: false,
        transparent: false,
    }
}

impl GoogleData {
    pub fn new() -> GoogleData {
        // Primary calendar: Europe/Berlin (+01:00 in winter).
        let (tz, off) = ("Europe/Berlin", 60);
        let mut primary = Vec::new();
        let team_people: &[&str] = &[GOOGLE_EMAIL, "alice@example.com", "bob@example.com"];
        let mut day = utc(2025, 1, 6, 8, 30);
        while day < utc(2025, 2, 1, 0, 0) {
            use chrono::Datelike;
            if day.weekday().num_days_from_monday() < 5 {
                let mut s = spec(
                    format!("kwstandup_{}", day.format("%Y%m%dT%H%M%SZ")),
                    "Daily standup",
                    day,
                    15,
                    GOOGLE_EMAIL,
                );
                s.attendees = team_people;
                s.recurring = Some("kwstandup");
                s.meet = true;
                s.description = Some("What did you do, what will you do, what blocks you?");
                primary.push(build_event("primary", tz, off, s));
            }
            day += ChronoDuration::days(1);
        }
        for d in [7, 14, 21, 28] {
            let mut s = spec(
                format!("kw1on1alice202501{d:02}"),
                "1:1 Alice / Tester",
                utc(2025, 1, d, 13, 0),
                30,
                "alice@example.com",
            );
            s.attendees = &["alice@example.com", GOOGLE_EMAIL];
            primary.push(build_event("primary", tz, off, s));
        }
        let mut planning = spec(
            "kwq1planning".into(),
            "Q1 planning",
            utc(2025, 1, 8, 9, 0),
            120,
            GOOGLE_EMAIL,
        );
        planning.location = Some("Room 4.01, Berlin office");
        planning.description = Some("Agenda: roadmap, hiring, budget. Bring your OKR drafts.");
        planning.attendees = &[
            GOOGLE_EMAIL,
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
        ];
        planning.meet = true;
        primary.push(build_event("primary", tz, off, planning));
        let mut focus = spec(
            "kwfocustime0109".into(),
            "Focus time",
            utc(2025, 1, 9, 12, 0),
            120,
            GOOGLE_EMAIL,
        );
        focus.transparent = true;
        primary.push(build_event("primary", tz, off, focus));
        let mut lunch = spec(
            "kwteamlunch0110".into(),
            "Team lunch",
            utc(2025, 1, 10, 11, 0),
            60,
            GOOGLE_EMAIL,
        );
        lunch.location = Some("Pho Noodle Bar");
        primary.push(build_event("primary", tz, off, lunch));
        primary.push(build_event(
            "primary",
            tz,
            off,
            spec(
                "kwdentist0115".into(),
                "Dentist",
                utc(2025, 1, 15, 16, 0),
                60,
                GOOGLE_EMAIL,
            ),
        ));
        let mut offsite = spec(
            "kwoffsite2025".into(),
            "Company offsite",
            utc(2025, 1, 23, 0, 0),
            0,
            GOOGLE_EMAIL,
        );
        offsite.all_day = true;
        offsite.end = utc(2025, 1, 25, 0, 0);
        offsite.location = Some("Lake Como");
        primary.push(build_event("primary", tz, off, offsite));
        let mut review = spec(
            "kwdesignreview0204".into(),
            "Design review: vault format",
            utc(2025, 2, 4, 14, 0),
            60,
            "carol@example.com",
        );
        review.attendees = &["carol@example.com", GOOGLE_EMAIL, "bob@example.com"];
        review.description = Some("Review of the sealed record layout and AAD binding.");
        primary.push(build_event("primary", tz, off, review));

        // Team calendar: America/New_York (-05:00 in winter).
        let (ttz, toff) = ("America/New_York", -300);
        let mut team = Vec::new();
        let mut thu = utc(2025, 1, 9, 16, 0);
        while thu < utc(2025, 3, 1, 0, 0) {
            let mut s = spec(
                format!("kwrelsync{}", thu.format("%Y%m%d")),
                "Release sync",
                thu,
                30,
                "alice@example.com",
            );
            s.attendees = &["alice@example.com", "bob@example.com", GOOGLE_EMAIL];
            s.meet = true;
            team.push(build_event(TEAM_CALENDAR, ttz, toff, s));
            thu += ChronoDuration::days(7);
        }
        let mut incident = spec(
            "kwincidentreview".into(),
            "Incident review: token outage",
            utc(2025, 1, 16, 20, 0),
            60,
            "bob@example.com",
        );
        incident.description = Some("Postmortem of the refresh-token outage.");
        team.push(build_event(TEAM_CALENDAR, ttz, toff, incident));

        let mut holidays = Vec::new();
        for (id, name, y, m, d) in [
            ("20250101_kwnewyear", "New Year's Day", 2025, 1, 1),
            (
                "20250120_kwmlkday",
                "Martin Luther King Jr. Day",
                2025,
                1,
                20,
            ),
            ("20250217_kwpresidents", "Presidents' Day", 2025, 2, 17),
            ("20250526_kwmemorial", "Memorial Day", 2025, 5, 26),
        ] {
            let mut s = spec(id.into(), name, utc(y, m, d, 0, 0), 0, HOLIDAY_CALENDAR);
            s.all_day = true;
            s.end = s.start + ChronoDuration::days(1);
            s.transparent = true;
            s.description = Some("Public holiday");
            holidays.push(build_event(HOLIDAY_CALENDAR, "UTC", 0, s));
        }

        GoogleData {
            calendars: vec![
                Calendar {
                    id: GOOGLE_EMAIL.into(),
                    summary: GOOGLE_EMAIL.into(),
                    description: String::new(),
                    tz: tz.into(),
                    offset_minutes: off,
                    access_role: "owner",
                    primary: true,
                    color: ("14", "#9fe1e7", "#000000"),
                    events: primary,
                },
                Calendar {
                    id: TEAM_CALENDAR.into(),
                    summary: "Team calendar".into(),
                    description: "Shared calendar of the platform team".into(),
                    tz: ttz.into(),
                    offset_minutes: toff,
                    access_role: "writer",
                    primary: false,
                    color: ("9", "#7bd148", "#000000"),
                    events: team,
                },
                Calendar {
                    id: HOLIDAY_CALENDAR.into(),
                    summary: "Holidays in United States".into(),
                    description: "Holidays and Observances in United States".into(),
                    tz: "America/New_York".into(),
                    offset_minutes: -300,
                    access_role: "reader",
                    primary: false,
                    color: ("8", "#16a765", "#000000"),
                    events: holidays,
                },
            ],
        }
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        if id == "primary" {
            return self.calendars.iter().position(|c| c.primary);
        }
        self.calendars.iter().position(|c| c.id == id)
    }
}

// ----- errors ---------------------------------------------------------------------------------

fn gerr(code: u16, message: &str, reason: &str, domain: &str, status: &str) -> Response {
    let mut inner = Map::new();
    inner.insert("code".into(), json!(code));
    inner.insert("message".into(), json!(message));
    inner.insert(
        "errors".into(),
        json!([{ "message": message, "domain": domain, "reason": reason }]),
    );
    if !status.is_empty() {
        inner.insert("status".into(), json!(status));
    }
    let mut resp = json_response(code, &json!({ "error": Value::Object(inner) }));
    set_header(&mut resp, "content-type", "application/json; charset=UTF-8");
    set_header(&mut resp, "vary", "Origin, X-Origin, Referer");
    resp
}

pub(crate) fn not_found() -> Response {
    gerr(404, "Not Found", "notFound", "global", "NOT_FOUND")
}

fn bad_request(message: &str, reason: &str) -> Response {
    gerr(400, message, reason, "global", "INVALID_ARGUMENT")
}

/// The answer to an injected API failure.
pub(crate) fn failure(status: u16) -> Response {
    match status {
        429 => gerr(
            429,
            "Rate Limit Exceeded",
            "rateLimitExceeded",
            "usageLimits",
            "RESOURCE_EXHAUSTED",
        ),
        403 => gerr(
            403,
            "Rate Limit Exceeded",
            "rateLimitExceeded",
            "usageLimits",
            "PERMISSION_DENIED",
        ),
        500 => gerr(500, "Backend Error", "backendError", "global", "INTERNAL"),
        503 => gerr(
            503,
            "The service is currently unavailable.",
            "backendError",
            "global",
            "UNAVAILABLE",
        ),
        s => gerr(s, "Backend Error", "backendError", "global", "UNKNOWN"),
    }
}

fn unauthenticated(missing: bool) -> Response {
    let mut resp = if missing {
        let mut r = json_response(
            401,
            &json!({ "error": {
                "code": 401,
                "message": "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                "errors": [{ "message": "Login Required.", "domain": "global", "reason": "required", "location": "Authorization", "locationType": "header" }],
                "status": "UNAUTHENTICATED"
            }}),
        );
        set_header(
            &mut r,
            "www-authenticate",
            "Bearer realm=\"https://accounts.google.com/\"",
        );
        r
    } else {
        json_response(
            401,
            &json!({ "error": {
                "code": 401,
                "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                "errors": [{ "message": "Invalid Credentials", "domain": "global", "reason": "authError", "location": "Authorization", "locationType": "header" }],
                "status": "UNAUTHENTICATED"
            }}),
        )
    };
    if !missing {
        set_header(
            &mut resp,
            "www-authenticate",
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        );
    }
    resp
}

fn insufficient_scope(needed: &str) -> Response {
    let mut resp = json_response(
        403,
        &json!({ "error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "errors": [{ "message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions" }],
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": { "service": "calendar-json.googleapis.com", "method": "calendar.v3.Calendar" }
            }]
        }}),
    );
    set_header(
        &mut resp,
        "www-authenticate",
        &format!("Bearer realm=\"https://accounts.google.com/\", error=\"insufficient_scope\", scope=\"{GOOGLE_SCOPE_PREFIX}{needed}\""),
    );
    resp
}

// ----- routing --------------------------------------------------------------------------------

const READ_LIST: &[&str] = &[
    "calendar",
    "calendar.readonly",
    "calendar.calendarlist",
    "calendar.calendarlist.readonly",
];
const READ_EVENTS: &[&str] = &[
    "calendar",
    "calendar.readonly",
    "calendar.events",
    "calendar.events.readonly",
    "calendar.events.owned",
    "calendar.events.owned.readonly",
];
const WRITE_EVENTS: &[&str] = &["calendar", "calendar.events", "calendar.events.owned"];
const FREEBUSY: &[&str] = &[
    "calendar",
    "calendar.readonly",
    "calendar.freebusy",
    "calendar.events.freebusy",
];

struct Ctx<'a> {
    st: &'a SharedState,
    r: &'a Req,
    scopes: Vec<String>,
}

impl Ctx<'_> {
    fn allowed(&self, any: &[&str]) -> Result<(), Response> {
        let ok = self.scopes.iter().any(|s| {
            s.strip_prefix(GOOGLE_SCOPE_PREFIX)
                .is_some_and(|short| any.contains(&short))
        });
        if ok {
            Ok(())
        } else {
            Err(insufficient_scope(any[0]))
        }
    }
}

pub(crate) fn handle(st: &SharedState, r: &Req, segs: &[String]) -> Response {
    let scopes = match r.bearer(false) {
        None => return unauthenticated(true),
        Some(token) => match st.check_token(Provider::Google, token) {
            TokenStatus::Valid { scopes, .. } => scopes,
            _ => return unauthenticated(false),
        },
    };
    let ctx = Ctx { st, r, scopes };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let result = match (r.method.as_str(), s.as_slice()) {
        ("GET", ["users", "me", "calendarList"]) => calendar_list(&ctx),
        ("GET", ["users", "me", "calendarList", id]) => calendar_list_entry(&ctx, id),
        ("GET", ["calendars", cal]) => calendar_get(&ctx, cal),
        ("GET", ["calendars", cal, "events"]) => list_events(&ctx, cal),
        ("POST", ["calendars", cal, "events"]) => insert_event(&ctx, cal),
        ("GET", ["calendars", cal, "events", ev]) => get_event(&ctx, cal, ev),
        ("PATCH", ["calendars", cal, "events", ev]) => more::patch_event(&ctx, cal, ev),
        ("POST", ["calendars", cal, "events", "quickAdd"]) => more::quick_add(&ctx, cal),
        ("GET", ["calendars", cal, "events", ev, "instances"]) => more::instances(&ctx, cal, ev),
        ("DELETE", ["calendars", cal, "events", ev]) => delete_event(&ctx, cal, ev),
        ("POST", ["freeBusy"]) => free_busy(&ctx),
        _ => Err(not_found()),
    };
    let mut resp = result.unwrap_or_else(|e| e);
    if resp.status().is_success() && resp.status() != axum::http::StatusCode::NO_CONTENT {
        set_header(&mut resp, "content-type", "application/json; charset=UTF-8");
    }
    set_header(&mut resp, "vary", "Origin, X-Origin, Referer");
    resp
}

fn page_token_encode(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("kwpage:{offset}"))
}

fn page_token_decode(token: &str) -> Option<usize> {
    super::decode_cursor("kwpage", token)
}

fn max_results(ctx: &Ctx, default: usize, max: usize) -> Result<usize, Response> {
    match ctx.r.query_get("maxResults") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(bad_request(
                &format!("Invalid value '{v}'. Values must be within the range: [1, {max}]"),
                "invalidParameter",
            )),
        },
    }
}

fn calendar_entry_json(c: &Calendar) -> Value {
    let mut v = json!({
        "kind": "calendar#calendarListEntry",
        "etag": format!("\"{}\"", 1_700_000_000_000_000u64 + super::fnv(&[&c.id]) % 1_000_000_000_000),
        "id": c.id,
        "summary": c.summary,
        "timeZone": c.tz,
        "colorId": c.color.0,
        "backgroundColor": c.color.1,
        "foregroundColor": c.color.2,
        "selected": true,
        "accessRole": c.access_role,
        "defaultReminders": if c.access_role == "owner" { json!([{ "method": "popup", "minutes": 10 }]) } else { json!([]) },
        "conferenceProperties": { "allowedConferenceSolutionTypes": ["hangoutsMeet"] }
    });
    if let Value::Object(o) = &mut v {
        if !c.description.is_empty() {
            o.insert("description".into(), json!(c.description));
        }
        if c.primary {
            o.insert("primary".into(), json!(true));
            o.insert(
                "notificationSettings".into(),
                json!({ "notifications": [{ "type": "eventCreation", "method": "email" }] }),
            );
        }
    }
    v
}

fn calendar_list(ctx: &Ctx) -> Result<Response, Response> {
    ctx.allowed(READ_LIST)?;
    let max = max_results(ctx, 100, 250)?;
    let offset = match ctx.r.query_get("pageToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => page_token_decode(t)
            .ok_or_else(|| bad_request("Invalid page token value.", "invalid"))?,
    };
    let data = lock(&ctx.st.data);
    let all: Vec<Value> = data
        .google
        .calendars
        .iter()
        .map(calendar_entry_json)
        .collect();
    drop(data);
    let start = offset.min(all.len());
    let end = (start + max).min(all.len());
    let mut v = json!({ "kind": "calendar#calendarList", "etag": "\"p32ofplf5q6qu80o\"" });
    if let Value::Object(o) = &mut v {
        if end < all.len() {
            o.insert("nextPageToken".into(), json!(page_token_encode(end)));
        } else {
            o.insert(
                "nextSyncToken".into(),
                json!("CKDz1-b0h4oDEhF0ZXN0ZXJAZXhhbXBsZS5jb20="),
            );
        }
        o.insert("items".into(), Value::Array(all[start..end].to_vec()));
    }
    Ok(json_response(200, &v))
}

fn calendar_list_entry(ctx: &Ctx, id: &str) -> Result<Response, Response> {
    ctx.allowed(READ_LIST)?;
    let data = lock(&ctx.st.data);
    let idx = data.google.index_of(id).ok_or_else(not_found)?;
    Ok(json_response(
        200,
        &calendar_entry_json(&data.google.calendars[idx]),
    ))
}

fn calendar_get(ctx: &Ctx, id: &str) -> Result<Response, Response> {
    ctx.allowed(READ_LIST)?;
    let data = lock(&ctx.st.data);
    let idx = data.google.index_of(id).ok_or_else(not_found)?;
    let c = &data.google.calendars[idx];
    Ok(json_response(
        200,
        &json!({
            "kind": "calendar#calendar",
            "etag": "\"kwcal\"",
            "id": c.id,
            "summary": c.summary,
            "timeZone": c.tz,
            "conferenceProperties": { "allowedConferenceSolutionTypes": ["hangoutsMeet"] }
        }),
    ))
}

fn parse_time_param(ctx: &Ctx, name: &str) -> Result<Option<DateTime<Utc>>, Response> {
    match ctx.r.query_get(name) {
        None => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| bad_request("Bad Request", "badRequest")),
    }
}

fn event_view(e: &Event) -> Value {
    let mut v = e.json.clone();
    if e.cancelled {
        if let Value::Object(o) = &mut v {
            o.insert("status".into(), json!("cancelled"));
        }
    }
    v
}

/// A recurring series shown as its master event (`singleEvents=false`).
fn master_view(e: &Event, series: &str) -> Value {
    let mut v = event_view(e);
    if let Value::Object(o) = &mut v {
        o.insert("id".into(), json!(series));
        o.remove("recurringEventId");
        o.remove("originalStartTime");
        o.insert(
            "recurrence".into(),
            json!(["RRULE:FREQ=WEEKLY;WKST=MO;BYDAY=MO,TU,WE,TH,FR"]),
        );
    }
    v
}

fn list_events(ctx: &Ctx, cal: &str) -> Result<Response, Response> {
    let q = |n: &str| ctx.r.query_get(n);
    let data = lock(&ctx.st.data);
    let idx = data.google.index_of(cal).ok_or_else(not_found)?;
    ctx.allowed(READ_EVENTS)?;
    let c = &data.google.calendars[idx];
    let single = q("singleEvents") == Some("true");
    let order = q("orderBy");
    match order {
        None | Some("updated") => {}
        Some("startTime") if single => {}
        Some("startTime") => {
            return Err(bad_request(
                "The requested ordering is not available for the particular query.",
                "badRequest",
            ))
        }
        Some(_) => {
            return Err(bad_request(
                "Invalid value for: orderBy",
                "invalidParameter",
            ))
        }
    }
    let time_min = parse_time_param(ctx, "timeMin")?;
    let time_max = parse_time_param(ctx, "timeMax")?;
    if let (Some(a), Some(b)) = (time_min, time_max) {
        if a >= b {
            return Err(bad_request(
                "The specified time range is empty.",
                "timeRangeEmpty",
            ));
        }
    }
    let max = max_results(ctx, 250, 2500)?;
    let offset = match q("pageToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => page_token_decode(t)
            .ok_or_else(|| bad_request("Invalid page token value.", "invalid"))?,
    };
    let show_deleted = q("showDeleted") == Some("true");
    let words: Vec<String> = q("q")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let mut matched: Vec<&Event> = c
        .events
        .iter()
        .filter(|e| show_deleted || !e.cancelled)
        .filter(|e| time_min.is_none_or(|t| e.end > t))
        .filter(|e| time_max.is_none_or(|t| e.start < t))
        .filter(|e| words.iter().all(|w| e.text.contains(w.as_str())))
        .collect();
    match order {
        Some("startTime") => matched.sort_by_key(|e| (e.start, e.id.clone())),
        Some("updated") => matched.sort_by_key(|e| (e.updated, e.id.clone())),
        _ => {}
    }
    let mut items: Vec<Value> = Vec::new();
    let mut seen_series: Vec<String> = Vec::new();
    for e in matched {
        match (&e.recurring, single) {
            (Some(series), false) => {
                if !seen_series.contains(series) {
                    seen_series.push(series.clone());
                    items.push(master_view(e, series));
                }
            }
            _ => items.push(event_view(e)),
        }
    }
    Ok(json_response(200, &events_page(c, &items, offset, max)))
}

/// A page of `items` from `offset` as an events list answer of calendar `c`.
fn events_page(c: &Calendar, items: &[Value], offset: usize, max: usize) -> Value {
    let start = offset.min(items.len());
    let end = (start + max).min(items.len());
    let updated = c.events.iter().map(|e| e.updated).max().unwrap_or_default();
    let mut v = Map::new();
    v.insert("kind".into(), json!("calendar#events"));
    v.insert("etag".into(), json!("\"p33c9lsvl3fqou0o\""));
    v.insert("summary".into(), json!(c.summary));
    v.insert("description".into(), json!(c.description));
    v.insert("updated".into(), json!(millis_z(updated)));
    v.insert("timeZone".into(), json!(c.tz));
    v.insert("accessRole".into(), json!(c.access_role));
    v.insert(
        "defaultReminders".into(),
        if c.access_role == "owner" {
            json!([{ "method": "popup", "minutes": 10 }])
        } else {
            json!([])
        },
    );
    if end < items.len() {
        v.insert("nextPageToken".into(), json!(page_token_encode(end)));
    } else {
        v.insert(
            "nextSyncToken".into(),
            json!("CPDAlvWDx70CEPDAlvWDx70CGAUgwP7r0wI="),
        );
    }
    v.insert("items".into(), Value::Array(items[start..end].to_vec()));
    Value::Object(v)
}

fn get_event(ctx: &Ctx, cal: &str, ev: &str) -> Result<Response, Response> {
    let data = lock(&ctx.st.data);
    let idx = data.google.index_of(cal).ok_or_else(not_found)?;
    ctx.allowed(READ_EVENTS)?;
    let e = data.google.calendars[idx]
        .events
        .iter()
        .find(|e| e.id == ev && !e.cancelled)
        .ok_or_else(not_found)?;
    Ok(json_response(200, &event_view(e)))
}

fn writer_check(c: &Calendar) -> Result<(), Response> {
    if c.access_role == "reader" || c.access_role == "freeBusyReader" {
        return Err(gerr(
            403,
            "You need to have writer access to this calendar.",
            "requiredAccessLevel",
            "calendar",
            "PERMISSION_DENIED",
        ));
    }
    Ok(())
}

fn send_updates_check(ctx: &Ctx) -> Result<(), Response> {
    match ctx.r.query_get("sendUpdates") {
        None | Some("all" | "externalOnly" | "none") => Ok(()),
        Some(other) => Err(bad_request(
            &format!("Invalid value for: {other} is not a valid value"),
            "invalidParameter",
        )),
    }
}

/// Offsets for the zones tests use; any other well-formed IANA name is taken as UTC.
fn zone_offset(tz: &str) -> Option<i32> {
    let known = match tz {
        "UTC" | "Etc/UTC" | "GMT" | "Europe/London" | "Europe/Lisbon" | "Africa/Abidjan" => 0,
        "Europe/Berlin" | "Europe/Paris" | "Europe/Amsterdam" | "Europe/Madrid" | "Europe/Rome"
        | "Europe/Vienna" | "Europe/Zurich" | "Europe/Stockholm" | "Europe/Warsaw" => 60,
        "Europe/Helsinki" | "Europe/Athens" | "Europe/Kyiv" => 120,
        "Asia/Kolkata" => 330,
        "Asia/Tokyo" | "Asia/Seoul" => 540,
        "Australia/Sydney" => 660,
        "America/New_York" | "America/Toronto" => -300,
        "America/Chicago" => -360,
        "America/Denver" => -420,
        "America/Los_Angeles" => -480,
        _ => {
            let well_formed = tz.split('/').count() >= 2
                && tz.split('/').all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b))
                });
            return well_formed.then_some(0);
        }
    };
    Some(known)
}

/// One `start`/`end` object of an insert: the instant and the object as stored.
fn parse_when(v: Option<&Value>, which: &str) -> Result<(DateTime<Utc>, Value, bool), Response> {
    let Some(Value::Object(o)) = v else {
        return Err(bad_request(&format!("Missing {which} time."), "required"));
    };
    let tz = o
        .get("timeZone")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if let Some(date) = o.get("date").and_then(Value::as_str) {
        let d = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| bad_request("Invalid value for: date", "invalid"))?;
        let t = Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
        return Ok((t, json!({ "date": date }), true));
    }
    let Some(dt) = o.get("dateTime").and_then(Value::as_str) else {
        return Err(bad_request(&format!("Missing {which} time."), "required"));
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(dt) {
        let mut stored = json!({ "dateTime": dt });
        if let (Some(tz), Value::Object(s)) = (tz, &mut stored) {
            if zone_offset(tz).is_none() {
                return Err(bad_request(
                    &format!("Invalid time zone definition for {which} time."),
                    "invalid",
                ));
            }
            s.insert("timeZone".into(), json!(tz));
        }
        return Ok((t.with_timezone(&Utc), stored, false));
    }
    let naive = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| bad_request("Bad Request", "badRequest"))?;
    let Some(tz) = tz else {
        return Err(bad_request(
            &format!("Missing time zone definition for {which} time."),
            "required",
        ));
    };
    let Some(offset) = zone_offset(tz) else {
        return Err(bad_request(
            &format!("Invalid time zone definition for {which} time."),
            "invalid",
        ));
    };
    let t = Utc.from_utc_datetime(&naive) - ChronoDuration::minutes(i64::from(offset));
    let shown = rfc3339_in(t, offset);
    Ok((t, json!({ "dateTime": shown, "timeZone": tz }), false))
}

fn insert_event(ctx: &Ctx, cal: &str) -> Result<Response, Response> {
    let mut data = lock(&ctx.st.data);
    let idx = data.google.index_of(cal).ok_or_else(not_found)?;
    ctx.allowed(WRITE_EVENTS)?;
    writer_check(&data.google.calendars[idx])?;
    send_updates_check(ctx)?;
    let Some(Value::Object(body)) = ctx.r.json() else {
        return Err(bad_request("Parse Error", "parseError"));
    };
    let out = add_event(&mut data.google.calendars[idx], &body)?;
    Ok(json_response(200, &out))
}

/// Store a new event from an insert's body in `c`; the event as Google returns it.
fn add_event(c: &mut Calendar, body: &Map<String, Value>) -> Result<Value, Response> {
    let (start, start_obj, _all_day) = parse_when(body.get("start"), "start")?;
    let (end, end_obj, _) = parse_when(body.get("end"), "end")?;
    if end <= start {
        return Err(bad_request(
            "The specified time range is empty.",
            "timeRangeEmpty",
        ));
    }
    let mut attendees = Vec::new();
    if let Some(list) = body.get("attendees") {
        let Value::Array(list) = list else {
            return Err(bad_request("Invalid value for: attendees", "invalid"));
        };
        for a in list {
            let email = a.get("email").and_then(Value::as_str).unwrap_or("");
            if !email.contains('@') {
                return Err(bad_request("Invalid attendee email.", "invalid"));
            }
            attendees.push(json!({ "email": email, "responseStatus": "needsAction" }));
        }
    }
    let id = random_string(b"abcdefghijklmnopqrstuv0123456789", 26);
    let now = Utc::now();
    let summary = body.get("summary").and_then(Value::as_str).unwrap_or("");
    let mut m = Map::new();
    m.insert("kind".into(), json!("calendar#event"));
    m.insert(
        "etag".into(),
        json!(format!("\"{}\"", now.timestamp_micros())),
    );
    m.insert("id".into(), json!(id));
    m.insert("status".into(), json!("confirmed"));
    m.insert("htmlLink".into(), json!(html_link(&id, &c.id)));
    m.insert("created".into(), json!(millis_z(now)));
    m.insert("updated".into(), json!(millis_z(now)));
    if !summary.is_empty() {
        m.insert("summary".into(), json!(summary));
    }
    for key in [
        "description",
        "location",
        "transparency",
        "visibility",
        "colorId",
    ] {
        if let Some(v) = body.get(key).filter(|v| v.is_string()) {
            m.insert(key.into(), v.clone());
        }
    }
    let me = if c.primary {
        GOOGLE_EMAIL.to_string()
    } else {
        c.id.clone()
    };
    m.insert(
        "creator".into(),
        json!({ "email": GOOGLE_EMAIL, "self": true }),
    );
    m.insert("organizer".into(), json!({ "email": me, "self": true }));
    m.insert("start".into(), start_obj);
    m.insert("end".into(), end_obj);
    m.insert("iCalUID".into(), json!(format!("{id}@google.com")));
    m.insert("sequence".into(), json!(0));
    if !attendees.is_empty() {
        m.insert("attendees".into(), Value::Array(attendees));
    }
    m.insert("reminders".into(), json!({ "useDefault": true }));
    m.insert("eventType".into(), json!("default"));
    let text = format!(
        "{summary} {} {}",
        body.get("description")
            .and_then(Value::as_str)
            .unwrap_or(""),
        body.get("location").and_then(Value::as_str).unwrap_or("")
    )
    .to_lowercase();
    let event = Event {
        id,
        json: Value::Object(m),
        start,
        end,
        cancelled: false,
        transparent: body.get("transparency").and_then(Value::as_str) == Some("transparent"),
        updated: now,
        text,
        recurring: None,
    };
    let out = event.json.clone();
    c.events.push(event);
    Ok(out)
}

fn delete_event(ctx: &Ctx, cal: &str, ev: &str) -> Result<Response, Response> {
    let mut data = lock(&ctx.st.data);
    let idx = data.google.index_of(cal).ok_or_else(not_found)?;
    ctx.allowed(WRITE_EVENTS)?;
    writer_check(&data.google.calendars[idx])?;
    send_updates_check(ctx)?;
    let e = data.google.calendars[idx]
        .events
        .iter_mut()
        .find(|e| e.id == ev)
        .ok_or_else(not_found)?;
    if e.cancelled {
        return Err(gerr(
            410,
            "Resource has been deleted",
            "deleted",
            "global",
            "",
        ));
    }
    e.cancelled = true;
    e.updated = Utc::now();
    Ok(empty_response(204))
}

fn free_busy(ctx: &Ctx) -> Result<Response, Response> {
    ctx.allowed(FREEBUSY)?;
    let Some(Value::Object(body)) = ctx.r.json() else {
        return Err(bad_request("Parse Error", "parseError"));
    };
    let when = |name: &str| -> Result<DateTime<Utc>, Response> {
        let v = body
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request(&format!("Missing {name} parameter."), "required"))?;
        DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| bad_request("Bad Request", "badRequest"))
    };
    let min = when("timeMin")?;
    let max = when("timeMax")?;
    if max <= min {
        return Err(bad_request(
            "The specified time range is empty.",
            "timeRangeEmpty",
        ));
    }
    let ids: Vec<String> = body
        .get("items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let data = lock(&ctx.st.data);
    let mut calendars = Map::new();
    for id in ids {
        let entry = match data.google.index_of(&id) {
            Some(idx) => {
                let mut busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = data.google.calendars[idx]
                    .events
                    .iter()
                    .filter(|e| !e.cancelled && !e.transparent && e.end > min && e.start < max)
                    .map(|e| (e.start.max(min), e.end.min(max)))
                    .collect();
                busy.sort();
                let list: Vec<Value> = busy
                    .into_iter()
                    .map(|(s, e)| json!({ "start": rfc3339_in(s, 0), "end": rfc3339_in(e, 0) }))
                    .collect();
                json!({ "busy": list })
            }
            None => json!({ "errors": [{ "domain": "global", "reason": "notFound" }], "busy": [] }),
        };
        calendars.insert(id, entry);
    }
    Ok(json_response(
        200,
        &json!({
            "kind": "calendar#freeBusy",
            "timeMin": millis_z(min),
            "timeMax": millis_z(max),
            "calendars": Value::Object(calendars)
        }),
    ))
}
