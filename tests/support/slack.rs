//! The Slack Web API under `/slack/api/{method}`: always HTTP 200 with `{"ok": …}` (except
//! rate limits and outages), parameters from the query, a form body or a JSON body.
//!
//! Token errors are Slack's: no token → `not_authed`, unknown → `invalid_auth`, expired →
//! `token_expired`, revoked → `token_revoked`. A missing scope → `missing_scope` with `needed`
//! and `provided`.

use std::collections::HashMap;

/// The methods of the tools issue 16 added: users.list, reactions.add, conversations.open,
/// conversations.info and chat.getPermalink.
mod more;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::oauth::{self, TokenStatus};
use super::{
    decode_cursor, encode_cursor, json_response, lock, now_unix, outage_response, set_header,
    Provider, Req, SharedState, SLACK_TEAM_ID, SLACK_USER_ID,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Public,
    Private,
    Im,
    Mpim,
}

#[derive(Clone, Debug)]
pub(crate) struct Msg {
    pub ts: String,
    pub user: String,
    pub text: String,
    pub thread_ts: Option<String>,
    pub reply_count: u64,
    pub reply_users: Vec<String>,
    pub latest_reply: Option<String>,
    /// Emoji name → the users who reacted with it, in the order they did.
    pub reactions: Vec<(String, Vec<String>)>,
}

pub(crate) struct Channel {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub archived: bool,
    pub is_member: bool,
    pub topic: String,
    pub purpose: String,
    pub created: i64,
    pub num_members: u64,
    pub im_user: Option<String>,
    /// Oldest first; thread replies live in `replies`.
    pub messages: Vec<Msg>,
    pub replies: HashMap<String, Vec<Msg>>,
}

pub(crate) struct SlackUser {
    pub id: &'static str,
    pub name: &'static str,
    pub real_name: &'static str,
    pub title: &'static str,
    pub email: &'static str,
    pub tz: &'static str,
    pub tz_label: &'static str,
    pub tz_offset: i64,
    pub is_bot: bool,
    pub deleted: bool,
    pub is_admin: bool,
}

pub(crate) struct SlackData {
    pub channels: Vec<Channel>,
    pub users: Vec<SlackUser>,
    pub next_micro: u64,
}

/// 2025-01-01T09:00:00Z
const BASE: i64 = 1_735_722_000;

const TEXTS: &[&str] = &[
    "Deploying the new release to production now :rocket:",
    "Standup notes: finished the refresh single-flight work, starting on revocation",
    "Who wants lunch at noon? :ramen:",
    "Incident review for the token outage is at 3pm",
    "Can someone review <https://github.com/octocat/hello-world/pull/12|PR #12>?",
    "The release checklist is in the wiki",
    "Reminder: rotate the staging credentials this week",
    "Great job on the launch everyone! :tada:",
    "Build is green again after the flaky test fix",
    "Heads up: the calendar sync will be down for maintenance tonight",
];

const PEOPLE: &[&str] = &["U0ALICE001", "U0BOB00001", "U0CAROL001", SLACK_USER_ID];

fn ts(secs: i64, micros: u64) -> String {
    format!("{secs}.{micros:06}")
}

/// (seconds, microseconds) of a Slack timestamp, for ordering.
fn ts_key(ts: &str) -> Option<(i64, u64)> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    let secs = secs.parse().ok()?;
    let mut frac = frac.to_string();
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    while frac.len() < 6 {
        frac.push('0');
    }
    Some((secs, frac.parse().ok()?))
}

fn make_channel(
    ci: usize,
    id: &str,
    name: &str,
    kind: Kind,
    count: usize,
    threads: bool,
) -> Channel {
    let mut messages = Vec::new();
    let mut replies = HashMap::new();
    for i in 0..count {
        let secs = BASE + (ci as i64) * 100_000 + (i as i64) * 600;
        let msg_ts = ts(secs, (ci * 1000 + i) as u64 % 1_000_000);
        let user = PEOPLE[(ci + i) % PEOPLE.len()].to_string();
        let text = format!("{} ({name} #{})", TEXTS[(ci * 3 + i) % TEXTS.len()], i + 1);
        let mut msg = Msg {
            ts: msg_ts.clone(),
            user,
            text,
            thread_ts: None,
            reply_count: 0,
            reply_users: Vec::new(),
            latest_reply: None,
            reactions: Vec::new(),
        };
        if threads && i % 10 == 3 {
            let mut thread = Vec::new();
            for k in 0..3 {
                let reply_ts = ts(
                    secs + 60 * (k as i64 + 1),
                    (ci * 1000 + i) as u64 % 1_000_000 + 1,
                );
                thread.push(Msg {
                    ts: reply_ts,
                    user: PEOPLE[(i + k + 1) % PEOPLE.len()].to_string(),
                    text: format!(
                        "Reply {} to \"{}\"",
                        k + 1,
                        TEXTS[(ci * 3 + i) % TEXTS.len()]
                    ),
                    thread_ts: Some(msg_ts.clone()),
                    reply_count: 0,
                    reply_users: Vec::new(),
                    latest_reply: None,
                    reactions: Vec::new(),
                });
            }
            msg.thread_ts = Some(msg_ts.clone());
            msg.reply_count = thread.len() as u64;
            let mut users: Vec<String> = thread.iter().map(|m| m.user.clone()).collect();
            users.dedup();
            msg.reply_users = users;
            msg.latest_reply = thread.last().map(|m| m.ts.clone());
            replies.insert(msg_ts, thread);
        }
        messages.push(msg);
    }
    Channel {
        id: id.to_string(),
        name: name.to_string(),
        kind,
        archived: false,
        is_member: true,
        topic: format!("Talk about {name}"),
        purpose: format!("This channel is for {name}."),
        created: BASE - 86_400 * (30 + ci as i64),
        num_members: 3 + (ci as u64 % 5),
        im_user: None,
        messages,
        replies,
    }
}

impl SlackData {
    pub fn new() -> SlackData {
        let mut channels = vec![
            make_channel(0, "C0GENERAL1", "general", Kind::Public, 45, true),
            make_channel(1, "C0RANDOM01", "random", Kind::Public, 12, false),
            make_channel(2, "C0ENGINEER", "engineering", Kind::Public, 30, true),
            make_channel(3, "C0ANNOUNC1", "announcements", Kind::Public, 5, false),
        ];
        for i in 1..=8 {
            channels.push(make_channel(
                3 + i,
                &format!("C0PROJ000{i}"),
                &format!("project-{i}"),
                Kind::Public,
                3,
                false,
            ));
        }
        let mut not_member = make_channel(12, "C0NOTMEMB1", "not-joined", Kind::Public, 4, false);
        not_member.is_member = false;
        channels.push(not_member);
        channels.push(make_channel(
            13,
            "G0SECRET01",
            "secret-plans",
            Kind::Private,
            6,
            false,
        ));
        let mut archived = make_channel(14, "C0ARCHIVE1", "old-stuff", Kind::Public, 2, false);
        archived.archived = true;
        channels.push(archived);
        let mut dm = make_channel(15, "D0DMALICE1", "U0ALICE001", Kind::Im, 4, false);
        dm.im_user = Some("U0ALICE001".into());
        channels.push(dm);
        channels.push(make_channel(
            16,
            "G0MPIM0001",
            "mpdm-alice--bob--kw-tester-1",
            Kind::Mpim,
            3,
            false,
        ));
        let u =
            |id, name, real_name, title, email, tz: &'static str, tz_label, tz_offset| SlackUser {
                id,
                name,
                real_name,
                title,
                email,
                tz,
                tz_label,
                tz_offset,
                is_bot: false,
                deleted: false,
                is_admin: false,
            };
        let mut users = vec![
            u(
                SLACK_USER_ID,
                "kw-tester",
                "Keyward Tester",
                "QA",
                "tester@example.com",
                "Europe/Berlin",
                "Central European Time",
                3600,
            ),
            u(
                "U0ALICE001",
                "alice",
                "Alice Archer",
                "Staff Engineer",
                "alice@example.com",
                "America/New_York",
                "Eastern Standard Time",
                -18000,
            ),
            u(
                "U0BOB00001",
                "bob",
                "Bob Builder",
                "SRE",
                "bob@example.com",
                "Europe/London",
                "Greenwich Mean Time",
                0,
            ),
            u(
                "U0CAROL001",
                "carol",
                "Carol Chen",
                "Product Manager",
                "carol@example.com",
                "Asia/Tokyo",
                "Japan Standard Time",
                32400,
            ),
            u(
                "W0ENTUSER1",
                "erin",
                "Erin Enterprise",
                "Director",
                "erin@example.com",
                "America/Los_Angeles",
                "Pacific Standard Time",
                -28800,
            ),
        ];
        users[0].is_admin = true;
        let mut bot = u(
            "U0KWBOT001",
            "deploybot",
            "Deploy Bot",
            "",
            "",
            "America/Los_Angeles",
            "Pacific Standard Time",
            -28800,
        );
        bot.is_bot = true;
        users.push(bot);
        let mut gone = u(
            "U0GONE0001",
            "dave",
            "Dave Departed",
            "",
            "dave@example.com",
            "Europe/Paris",
            "Central European Time",
            3600,
        );
        gone.deleted = true;
        users.push(gone);
        SlackData {
            channels,
            users,
            next_micro: 100,
        }
    }
}

// ----- JSON shapes ----------------------------------------------------------------------------

fn channel_json(c: &Channel) -> Value {
    if c.kind == Kind::Im {
        return json!({
            "id": c.id,
            "created": c.created,
            "is_archived": c.archived,
            "is_im": true,
            "is_org_shared": false,
            "context_team_id": SLACK_TEAM_ID,
            "updated": c.created * 1000,
            "user": c.im_user,
            "is_user_deleted": false,
            "priority": 0
        });
    }
    json!({
        "id": c.id,
        "name": c.name,
        "is_channel": matches!(c.kind, Kind::Public),
        "is_group": matches!(c.kind, Kind::Private | Kind::Mpim),
        "is_im": false,
        "is_mpim": c.kind == Kind::Mpim,
        "is_private": c.kind != Kind::Public,
        "created": c.created,
        "is_archived": c.archived,
        "is_general": c.name == "general",
        "unlinked": 0,
        "name_normalized": c.name,
        "is_shared": false,
        "is_org_shared": false,
        "is_pending_ext_shared": false,
        "pending_shared": [],
        "context_team_id": SLACK_TEAM_ID,
        "updated": c.created * 1000,
        "parent_conversation": null,
        "creator": "U0ALICE001",
        "is_ext_shared": false,
        "shared_team_ids": [SLACK_TEAM_ID],
        "pending_connected_team_ids": [],
        "is_member": c.is_member,
        "topic": { "value": c.topic, "creator": "U0ALICE001", "last_set": c.created + 60 },
        "purpose": { "value": c.purpose, "creator": "U0ALICE001", "last_set": c.created + 60 },
        "previous_names": [],
        "num_members": c.num_members
    })
}

fn message_json(m: &Msg, parent: bool) -> Value {
    let block_id = format!("b{}", &super::fake_sha(&[&m.ts])[..6]);
    let mut v = json!({
        "user": m.user,
        "type": "message",
        "ts": m.ts,
        "client_msg_id": format!("{}-0000-4000-8000-{}", &super::fake_sha(&[&m.ts, "id"])[..8], &super::fake_sha(&[&m.ts, "c"])[..12]),
        "text": m.text,
        "team": SLACK_TEAM_ID,
        "blocks": [{
            "type": "rich_text",
            "block_id": block_id,
            "elements": [{ "type": "rich_text_section", "elements": [{ "type": "text", "text": m.text }] }]
        }]
    });
    if let (false, Value::Object(obj)) = (m.reactions.is_empty(), &mut v) {
        let list: Vec<Value> = m
            .reactions
            .iter()
            .map(|(name, users)| json!({ "name": name, "users": users, "count": users.len() }))
            .collect();
        obj.insert("reactions".into(), Value::Array(list));
    }
    if let (Some(thread_ts), Value::Object(obj)) = (&m.thread_ts, &mut v) {
        obj.insert("thread_ts".into(), json!(thread_ts));
        if parent && m.reply_count > 0 {
            obj.insert("reply_count".into(), json!(m.reply_count));
            obj.insert("reply_users_count".into(), json!(m.reply_users.len()));
            obj.insert("latest_reply".into(), json!(m.latest_reply));
            obj.insert("reply_users".into(), json!(m.reply_users));
            obj.insert("is_locked".into(), json!(false));
            obj.insert("subscribed".into(), json!(false));
        } else if thread_ts != &m.ts {
            obj.insert("parent_user_id".into(), json!("U0ALICE001"));
        }
    }
    v
}

fn user_json(u: &SlackUser, with_email: bool) -> Value {
    let display = if u.is_bot { "" } else { u.name };
    let mut profile = json!({
        "title": u.title,
        "phone": "",
        "skype": "",
        "real_name": u.real_name,
        "real_name_normalized": u.real_name,
        "display_name": display,
        "display_name_normalized": display,
        "fields": null,
        "status_text": "",
        "status_emoji": "",
        "status_expiration": 0,
        "avatar_hash": "ge3b51ca72de",
        "first_name": u.real_name.split(' ').next().unwrap_or(""),
        "last_name": u.real_name.split(' ').nth(1).unwrap_or(""),
        "image_24": "https://secure.gravatar.com/avatar/0.jpg?s=24",
        "image_72": "https://secure.gravatar.com/avatar/0.jpg?s=72",
        "image_192": "https://secure.gravatar.com/avatar/0.jpg?s=192",
        "team": SLACK_TEAM_ID
    });
    if with_email && !u.email.is_empty() {
        if let Value::Object(p) = &mut profile {
            p.insert("email".into(), json!(u.email));
        }
    }
    json!({
        "id": u.id,
        "team_id": SLACK_TEAM_ID,
        "name": u.name,
        "deleted": u.deleted,
        "color": "9f69e7",
        "real_name": u.real_name,
        "tz": u.tz,
        "tz_label": u.tz_label,
        "tz_offset": u.tz_offset,
        "profile": profile,
        "is_admin": u.is_admin,
        "is_owner": false,
        "is_primary_owner": false,
        "is_restricted": false,
        "is_ultra_restricted": false,
        "is_bot": u.is_bot,
        "is_app_user": false,
        "updated": 1_735_000_000,
        "is_email_confirmed": !u.is_bot,
        "who_can_share_contact_card": "EVERYONE"
    })
}

// ----- plumbing -------------------------------------------------------------------------------

fn ok_false(error: &str) -> Value {
    json!({ "ok": false, "error": error })
}

/// The answer to an injected API failure.
pub(crate) fn failure(status: u16) -> Response {
    match status {
        429 => {
            let mut resp = json_response(429, &ok_false("ratelimited"));
            set_header(&mut resp, "retry-after", "1");
            resp
        }
        500 => json_response(500, &ok_false("fatal_error")),
        s => outage_response(s),
    }
}

/// Query, form and JSON parameters (JSON values as text).
fn slack_params(r: &Req) -> Vec<(String, String)> {
    r.params_with_json()
}

struct Call<'a> {
    st: &'a SharedState,
    params: Vec<(String, String)>,
    scopes: Vec<String>,
    bot: bool,
}

impl Call<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        super::param(&self.params, name).filter(|v| !v.is_empty())
    }

    /// `Err(missing_scope answer)` unless the token has one of `any`.
    fn need(&self, any: &[&str]) -> Result<(), Value> {
        if self.scopes.iter().any(|s| any.contains(&s.as_str())) {
            return Ok(());
        }
        Err(json!({
            "ok": false,
            "error": "missing_scope",
            "needed": any[0],
            "provided": self.scopes.join(",")
        }))
    }

    /// The user the token acts as: the workspace's bot for a bot token.
    fn user_id(&self) -> &'static str {
        if self.bot {
            "U0KWBOT001"
        } else {
            SLACK_USER_ID
        }
    }

    fn number(&self, name: &str, default: usize, max: usize) -> usize {
        self.get(name)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&v| v > 0)
            .unwrap_or(default)
            .min(max)
    }
}

fn history_scope(kind: Kind) -> &'static str {
    match kind {
        Kind::Public => "channels:history",
        Kind::Private => "groups:history",
        Kind::Im => "im:history",
        Kind::Mpim => "mpim:history",
    }
}

pub(crate) fn handle(st: &SharedState, r: &Req, method: &str) -> Response {
    let params = slack_params(r);
    if method == "api.test" {
        let args: Map<String, Value> = params.into_iter().map(|(k, v)| (k, json!(v))).collect();
        return json_response(200, &json!({ "ok": true, "args": args }));
    }
    let token = r
        .bearer(false)
        .map(str::to_string)
        .or_else(|| super::param(&r.form(), "token").map(str::to_string));
    let Some(token) = token else {
        return json_response(200, &ok_false("not_authed"));
    };
    let (scopes, bot) = match st.check_token(Provider::Slack, &token) {
        TokenStatus::Valid { scopes, bot } => (scopes, bot),
        TokenStatus::Expired => return json_response(200, &ok_false("token_expired")),
        TokenStatus::Revoked => return json_response(200, &ok_false("token_revoked")),
        TokenStatus::Unknown => return json_response(200, &ok_false("invalid_auth")),
    };
    let call = Call {
        st,
        params,
        scopes,
        bot,
    };
    let json_without_charset = {
        let ct = r.content_type();
        ct.starts_with("application/json") && !ct.contains("charset")
    };
    let result = match method {
        "auth.test" => Ok(auth_test(&call)),
        "auth.revoke" => Ok(auth_revoke(&call, &token)),
        "conversations.list" => conversations_list(&call),
        "conversations.history" => conversations_history(&call),
        "conversations.replies" => conversations_replies(&call),
        "chat.postMessage" => post_message(&call, json_without_charset),
        "search.messages" => search_messages(&call),
        "users.info" => users_info(&call),
        "users.list" => more::users_list(&call),
        "reactions.add" => more::reactions_add(&call),
        "conversations.open" => more::conversations_open(&call),
        "conversations.info" => more::conversations_info(&call),
        "chat.getPermalink" => more::get_permalink(&call),
        _ => Ok(json!({ "ok": false, "error": "unknown_method", "req_method": method })),
    };
    let body = result.unwrap_or_else(|e| e);
    let mut resp = json_response(200, &body);
    set_header(&mut resp, "x-oauth-scopes", &call.scopes.join(","));
    set_header(
        &mut resp,
        "x-slack-req-id",
        &format!("{:032x}", st.next_seq()),
    );
    resp
}

fn auth_test(call: &Call) -> Value {
    let mut v = json!({
        "ok": true,
        "url": "https://acme.slack.com/",
        "team": "Acme",
        "user": if call.bot { "deploybot" } else { "kw-tester" },
        "team_id": SLACK_TEAM_ID,
        "user_id": call.user_id(),
        "is_enterprise_install": false
    });
    if call.bot {
        if let Value::Object(o) = &mut v {
            o.insert("bot_id".into(), json!("B0KWBOT001"));
        }
    }
    v
}

fn auth_revoke(call: &Call, token: &str) -> Value {
    let test = matches!(call.get("test"), Some("true" | "1"));
    if oauth::slack_revoke(call.st, token, test) {
        json!({ "ok": true, "revoked": !test })
    } else {
        ok_false("invalid_auth")
    }
}

fn page_of<T: Clone>(
    items: &[T],
    call: &Call,
    prefix: &str,
    default: usize,
    max: usize,
) -> Result<(Vec<T>, String), Value> {
    let limit = call.number("limit", default, max);
    let offset = match call.get("cursor") {
        None => 0,
        Some(c) => decode_cursor(prefix, c).ok_or_else(|| ok_false("invalid_cursor"))?,
    };
    let start = offset.min(items.len());
    let end = (start + limit).min(items.len());
    let next = if end < items.len() {
        encode_cursor(prefix, end)
    } else {
        String::new()
    };
    Ok((items[start..end].to_vec(), next))
}

fn conversations_list(call: &Call) -> Result<Value, Value> {
    let types = call.get("types").unwrap_or("public_channel");
    let mut kinds = Vec::new();
    for t in types.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (kind, scope) = match t {
            "public_channel" => (Kind::Public, "channels:read"),
            "private_channel" => (Kind::Private, "groups:read"),
            "im" => (Kind::Im, "im:read"),
            "mpim" => (Kind::Mpim, "mpim:read"),
            _ => return Err(ok_false("invalid_types")),
        };
        call.need(&[scope])?;
        kinds.push(kind);
    }
    let exclude_archived = matches!(call.get("exclude_archived"), Some("true" | "1"));
    let data = lock(&call.st.data);
    let all: Vec<Value> = data
        .slack
        .channels
        .iter()
        .filter(|c| kinds.contains(&c.kind))
        .filter(|c| !(exclude_archived && c.archived))
        .filter(|c| c.kind == Kind::Public || c.is_member)
        .map(channel_json)
        .collect();
    drop(data);
    let (channels, next) = page_of(&all, call, "channels", 100, 1000)?;
    Ok(json!({ "ok": true, "channels": channels, "response_metadata": { "next_cursor": next } }))
}

fn find_channel<'a>(channels: &'a [Channel], key: &str) -> Option<&'a Channel> {
    let name = key.strip_prefix('#').unwrap_or(key);
    channels.iter().find(|c| c.id == key || c.name == name)
}

fn conversations_history(call: &Call) -> Result<Value, Value> {
    let id = call
        .get("channel")
        .ok_or_else(|| ok_false("channel_not_found"))?;
    let data = lock(&call.st.data);
    let channel = find_channel(&data.slack.channels, id)
        .filter(|c| c.id == id)
        .filter(|c| c.kind == Kind::Public || c.is_member)
        .ok_or_else(|| ok_false("channel_not_found"))?;
    call.need(&[history_scope(channel.kind)])?;
    let inclusive = matches!(call.get("inclusive"), Some("true" | "1"));
    let oldest = match call.get("oldest") {
        Some(o) => Some(ts_key(o).ok_or_else(|| ok_false("invalid_ts_oldest"))?),
        None => None,
    };
    let latest = match call.get("latest") {
        Some(l) => Some(ts_key(l).ok_or_else(|| ok_false("invalid_ts_latest"))?),
        None => None,
    };
    let mut msgs: Vec<Value> = channel
        .messages
        .iter()
        .filter(|m| {
            let k = ts_key(&m.ts).unwrap_or_default();
            oldest.is_none_or(|o| if inclusive { k >= o } else { k > o })
                && latest.is_none_or(|l| if inclusive { k <= l } else { k < l })
        })
        .map(|m| message_json(m, true))
        .collect();
    drop(data);
    msgs.reverse();
    let (page, next) = page_of(&msgs, call, "history", 100, 999)?;
    let mut v = json!({
        "ok": true,
        "messages": page,
        "has_more": !next.is_empty(),
        "pin_count": 0,
        "channel_actions_ts": null,
        "channel_actions_count": 0
    });
    if !next.is_empty() {
        if let Value::Object(o) = &mut v {
            o.insert("response_metadata".into(), json!({ "next_cursor": next }));
        }
    }
    Ok(v)
}

fn conversations_replies(call: &Call) -> Result<Value, Value> {
    let id = call
        .get("channel")
        .ok_or_else(|| ok_false("channel_not_found"))?;
    let ts = call.get("ts").ok_or_else(|| ok_false("thread_not_found"))?;
    let data = lock(&call.st.data);
    let channel = find_channel(&data.slack.channels, id)
        .filter(|c| c.id == id)
        .filter(|c| c.kind == Kind::Public || c.is_member)
        .ok_or_else(|| ok_false("channel_not_found"))?;
    call.need(&[history_scope(channel.kind)])?;
    let parent_ts = channel
        .replies
        .iter()
        .find(|(_, list)| list.iter().any(|m| m.ts == ts))
        .map(|(p, _)| p.clone())
        .unwrap_or_else(|| ts.to_string());
    let parent = channel
        .messages
        .iter()
        .find(|m| m.ts == parent_ts)
        .ok_or_else(|| ok_false("thread_not_found"))?;
    let mut thread = vec![message_json(parent, true)];
    if let Some(list) = channel.replies.get(&parent_ts) {
        thread.extend(list.iter().map(|m| message_json(m, false)));
    }
    drop(data);
    let (page, next) = page_of(&thread, call, "replies", 1000, 1000)?;
    let mut v = json!({ "ok": true, "messages": page, "has_more": !next.is_empty() });
    if !next.is_empty() {
        if let Value::Object(o) = &mut v {
            o.insert("response_metadata".into(), json!({ "next_cursor": next }));
        }
    }
    Ok(v)
}

fn post_message(call: &Call, json_without_charset: bool) -> Result<Value, Value> {
    call.need(&["chat:write", "chat:write:user", "chat:write:bot"])?;
    let key = call
        .get("channel")
        .ok_or_else(|| ok_false("channel_not_found"))?;
    let text = call.get("text");
    if text.is_none() && call.get("blocks").is_none() && call.get("attachments").is_none() {
        return Err(ok_false("no_text"));
    }
    let text = text.unwrap_or("").to_string();
    if text.chars().count() > 40_000 {
        return Err(ok_false("msg_too_long"));
    }
    let thread_ts = call.get("thread_ts").map(str::to_string);
    let user = call.user_id();
    let mut data = lock(&call.st.data);
    let slack = &mut data.slack;
    slack.next_micro += 1;
    let micro = slack.next_micro % 1_000_000;
    let name = key.strip_prefix('#').unwrap_or(key);
    let channel = slack
        .channels
        .iter_mut()
        .find(|c| c.id == key || c.name == name)
        .filter(|c| c.kind == Kind::Public || c.is_member)
        .ok_or_else(|| ok_false("channel_not_found"))?;
    if channel.archived {
        return Err(ok_false("is_archived"));
    }
    let new_ts = ts(now_unix(), micro);
    let msg = Msg {
        ts: new_ts.clone(),
        user: user.to_string(),
        text: text.clone(),
        thread_ts: thread_ts.clone(),
        reply_count: 0,
        reply_users: Vec::new(),
        latest_reply: None,
        reactions: Vec::new(),
    };
    match &thread_ts {
        Some(parent_ts) => {
            if let Some(parent) = channel.messages.iter_mut().find(|m| &m.ts == parent_ts) {
                parent.thread_ts = Some(parent_ts.clone());
                parent.reply_count += 1;
                if !parent.reply_users.iter().any(|u| u == user) {
                    parent.reply_users.push(user.to_string());
                }
                parent.latest_reply = Some(new_ts.clone());
            }
            channel
                .replies
                .entry(parent_ts.clone())
                .or_default()
                .push(msg.clone());
        }
        None => channel.messages.push(msg.clone()),
    }
    let channel_id = channel.id.clone();
    drop(data);
    let mut message = message_json(&msg, false);
    if let Value::Object(o) = &mut message {
        o.remove("client_msg_id");
        o.insert("app_id".into(), json!("A0KWFAKE01"));
        if call.bot {
            o.insert("bot_id".into(), json!("B0KWBOT001"));
        }
    }
    let mut v = json!({ "ok": true, "channel": channel_id, "ts": new_ts, "message": message });
    if json_without_charset {
        if let Value::Object(o) = &mut v {
            o.insert("warning".into(), json!("missing_charset"));
            o.insert(
                "response_metadata".into(),
                json!({ "warnings": ["missing_charset"] }),
            );
        }
    }
    Ok(v)
}

fn search_messages(call: &Call) -> Result<Value, Value> {
    if call.bot {
        return Err(ok_false("not_allowed_token_type"));
    }
    call.need(&["search:read"])?;
    let query = call
        .get("query")
        .ok_or_else(|| ok_false("no_query"))?
        .to_string();
    let count = call.number("count", 20, 100);
    let page = call.number("page", 1, 100);
    let mut in_channel: Option<String> = None;
    let mut from: Option<String> = None;
    let mut words: Vec<String> = Vec::new();
    for term in query.split_whitespace() {
        let lower = term.to_ascii_lowercase();
        if let Some(c) = lower.strip_prefix("in:") {
            in_channel = Some(
                c.trim_start_matches('#')
                    .trim_matches(['<', '>'])
                    .to_string(),
            );
        } else if let Some(u) = lower.strip_prefix("from:") {
            from = Some(
                u.trim_start_matches('@')
                    .trim_matches(['<', '>', '@'])
                    .to_string(),
            );
        } else {
            words.push(lower.trim_matches('"').to_string());
        }
    }
    let data = lock(&call.st.data);
    let users = &data.slack.users;
    let mut matches: Vec<(String, Value)> = Vec::new();
    for c in data.slack.channels.iter().filter(|c| c.is_member) {
        if let Some(want) = &in_channel {
            if !(c.name.eq_ignore_ascii_case(want) || c.id.eq_ignore_ascii_case(want)) {
                continue;
            }
        }
        let all = c.messages.iter().chain(c.replies.values().flatten());
        for m in all {
            let author = users.iter().find(|u| u.id == m.user);
            let username = author.map(|u| u.name).unwrap_or("unknown");
            if let Some(f) = &from {
                if !(username.eq_ignore_ascii_case(f) || m.user.eq_ignore_ascii_case(f)) {
                    continue;
                }
            }
            let text = m.text.to_ascii_lowercase();
            if !words.iter().all(|w| text.contains(w.as_str())) {
                continue;
            }
            let permalink = format!(
                "https://acme.slack.com/archives/{}/p{}",
                c.id,
                m.ts.replace('.', "")
            );
            matches.push((
                m.ts.clone(),
                json!({
                    "iid": super::fake_sha(&[&c.id, &m.ts])[..32].to_string(),
                    "team": SLACK_TEAM_ID,
                    "score": 0,
                    "channel": {
                        "id": c.id,
                        "is_channel": c.kind == Kind::Public,
                        "is_group": matches!(c.kind, Kind::Private | Kind::Mpim),
                        "is_im": c.kind == Kind::Im,
                        "is_mpim": c.kind == Kind::Mpim,
                        "is_shared": false,
                        "is_org_shared": false,
                        "is_ext_shared": false,
                        "is_private": c.kind != Kind::Public,
                        "is_pending_ext_shared": false,
                        "pending_shared": [],
                        "name": c.name
                    },
                    "type": "message",
                    "user": m.user,
                    "username": username,
                    "ts": m.ts,
                    "text": m.text,
                    "permalink": permalink,
                    "no_reactions": true
                }),
            ));
        }
    }
    drop(data);
    matches.sort_by_key(|m| std::cmp::Reverse(ts_key(&m.0)));
    let total = matches.len();
    let pages = total.div_ceil(count).max(1);
    let start = ((page - 1) * count).min(total);
    let end = (start + count).min(total);
    let items: Vec<Value> = matches[start..end].iter().map(|(_, v)| v.clone()).collect();
    Ok(json!({
        "ok": true,
        "query": query,
        "messages": {
            "total": total,
            "pagination": {
                "total_count": total,
                "page": page,
                "per_page": count,
                "page_count": pages,
                "first": if total == 0 { 0 } else { start + 1 },
                "last": end
            },
            "paging": { "count": count, "total": total, "page": page, "pages": pages },
            "matches": items
        }
    }))
}

fn users_info(call: &Call) -> Result<Value, Value> {
    call.need(&["users:read"])?;
    let id = call.get("user").ok_or_else(|| ok_false("user_not_found"))?;
    let with_email = call.scopes.iter().any(|s| s == "users:read.email");
    let data = lock(&call.st.data);
    let user = data
        .slack
        .users
        .iter()
        .find(|u| u.id == id)
        .ok_or_else(|| ok_false("user_not_found"))?;
    Ok(json!({ "ok": true, "user": user_json(user, with_email) }))
}
