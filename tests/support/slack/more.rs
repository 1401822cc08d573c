//! users.list, reactions.add, conversations.open, conversations.info and chat.getPermalink,
//! on the same workspace as the methods in `slack.rs`: a reaction shows on the message in
//! conversations.history, a DM opened with conversations.open takes chat.postMessage.

use serde_json::{json, Value};

use super::super::{lock, SLACK_USER_ID};
use super::{channel_json, find_channel, ok_false, page_of, user_json, Call, Channel, Kind, Msg};

/// `users.list` (users:read; e-mails with users:read.email), cursor-paged.
pub(super) fn users_list(call: &Call) -> Result<Value, Value> {
    call.need(&["users:read"])?;
    let with_email = call.scopes.iter().any(|s| s == "users:read.email");
    let all: Vec<Value> = lock(&call.st.data)
        .slack
        .users
        .iter()
        .map(|u| user_json(u, with_email))
        .collect();
    let (members, next) = page_of(&all, call, "users", 1000, 1000)?;
    Ok(json!({
        "ok": true,
        "members": members,
        "cache_ts": 1_735_722_000,
        "response_metadata": { "next_cursor": next }
    }))
}

/// The channel `key` names if the user may see it (public, or a member).
fn visible<'a>(channels: &'a [Channel], key: &str) -> Result<&'a Channel, Value> {
    find_channel(channels, key)
        .filter(|c| c.id == key)
        .filter(|c| c.kind == Kind::Public || c.is_member)
        .ok_or_else(|| ok_false("channel_not_found"))
}

/// The message at `ts` in a channel, and the thread it is a reply in (if it is one).
fn message_at<'a>(c: &'a mut Channel, ts: &str) -> Option<(&'a mut Msg, Option<String>)> {
    if let Some(i) = c.messages.iter().position(|m| m.ts == ts) {
        return Some((&mut c.messages[i], None));
    }
    c.replies.iter_mut().find_map(|(parent, list)| {
        let parent = parent.clone();
        list.iter_mut()
            .find(|m| m.ts == ts)
            .map(|m| (m, Some(parent)))
    })
}

/// `reactions.add` (reactions:write): `channel`, `timestamp`, `name` (colons optional); the
/// same reaction twice is `already_reacted`.
pub(super) fn reactions_add(call: &Call) -> Result<Value, Value> {
    call.need(&["reactions:write"])?;
    let key = call
        .get("channel")
        .ok_or_else(|| ok_false("channel_not_found"))?;
    let ts = call
        .get("timestamp")
        .ok_or_else(|| ok_false("no_item_specified"))?;
    let name = call
        .get("name")
        .map(|n| n.trim_matches(':'))
        .filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_+-'".contains(&b))
        })
        .ok_or_else(|| ok_false("invalid_name"))?
        .to_string();
    let user = call.user_id();
    let mut data = lock(&call.st.data);
    let id = visible(&data.slack.channels, key)?.id.clone();
    let channel = data
        .slack
        .channels
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(|| ok_false("channel_not_found"))?;
    if channel.archived {
        return Err(ok_false("is_archived"));
    }
    let (msg, _) = message_at(channel, ts).ok_or_else(|| ok_false("message_not_found"))?;
    match msg.reactions.iter_mut().find(|(n, _)| *n == name) {
        Some((_, users)) if users.iter().any(|u| u == user) => Err(ok_false("already_reacted")),
        Some((_, users)) => {
            users.push(user.to_string());
            Ok(json!({ "ok": true }))
        }
        None => {
            msg.reactions.push((name, vec![user.to_string()]));
            Ok(json!({ "ok": true }))
        }
    }
}

/// `conversations.open` (im:write; mpim:write for more than one other user): `users` comma
/// separated. The same users get the same conversation back (`already_open`).
pub(super) fn conversations_open(call: &Call) -> Result<Value, Value> {
    let users: Vec<String> = call
        .get("users")
        .map(|u| {
            u.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if users.is_empty() {
        return Err(ok_false(if call.get("channel").is_some() {
            "method_not_supported_for_channel_type"
        } else {
            "users_list_not_supplied"
        }));
    }
    if users.len() > 8 {
        return Err(ok_false("too_many_users"));
    }
    call.need(&["im:write"])?;
    if users.len() > 1 {
        call.need(&["mpim:write"])?;
    }
    let mut data = lock(&call.st.data);
    let slack = &mut data.slack;
    for u in &users {
        match slack.users.iter().find(|x| x.id == u) {
            None => return Err(ok_false("user_not_found")),
            Some(x) if x.deleted => return Err(ok_false("user_disabled")),
            Some(_) => {}
        }
    }
    let (id, kind) = if let [user] = users.as_slice() {
        let existing = slack
            .channels
            .iter()
            .find(|c| c.kind == Kind::Im && c.im_user.as_deref() == Some(user.as_str()));
        match existing {
            Some(c) => (c.id.clone(), Kind::Im),
            None => (format!("D{}", &user[1..]), Kind::Im),
        }
    } else {
        let mut sorted = users.clone();
        sorted.push(SLACK_USER_ID.to_string());
        sorted.sort();
        sorted.dedup();
        let refs: Vec<&str> = sorted.iter().map(String::as_str).collect();
        (
            format!("G0MP{:06X}", super::super::fnv(&refs) % 0x100_0000),
            Kind::Mpim,
        )
    };
    let already_open = slack.channels.iter().any(|c| c.id == id);
    if !already_open {
        let name = if kind == Kind::Im {
            users[0].clone()
        } else {
            format!("mpdm-{}-1", users.join("--").to_lowercase())
        };
        let mut c = super::make_channel(20 + slack.channels.len(), &id, &name, kind, 0, false);
        if kind == Kind::Im {
            c.im_user = Some(users[0].clone());
        }
        slack.channels.push(c);
    }
    let channel = if matches!(call.get("return_im"), Some("true" | "1")) {
        slack
            .channels
            .iter()
            .find(|c| c.id == id)
            .map(channel_json)
            .unwrap_or(json!({ "id": id }))
    } else {
        json!({ "id": id })
    };
    let mut v = json!({ "ok": true, "channel": channel });
    if already_open {
        if let Value::Object(o) = &mut v {
            o.insert("no_op".into(), json!(true));
            o.insert("already_open".into(), json!(true));
        }
    }
    Ok(v)
}

/// `conversations.info`: channels:read for a public channel (groups:read, im:read, mpim:read
/// for the others); `num_members` only with `include_num_members`.
pub(super) fn conversations_info(call: &Call) -> Result<Value, Value> {
    let key = call
        .get("channel")
        .ok_or_else(|| ok_false("channel_not_found"))?;
    let data = lock(&call.st.data);
    let c = visible(&data.slack.channels, key)?;
    call.need(&[match c.kind {
        Kind::Public => "channels:read",
        Kind::Private => "groups:read",
        Kind::Im => "im:read",
        Kind::Mpim => "mpim:read",
    }])?;
    let mut channel = channel_json(c);
    if !matches!(call.get("include_num_members"), Some("true" | "1")) {
        if let Value::Object(o) = &mut channel {
            o.remove("num_members");
        }
    }
    Ok(json!({ "ok": true, "channel": channel }))
}

/// `chat.getPermalink` (no scope): the message's URL; a thread reply's carries its thread.
pub(super) fn get_permalink(call: &Call) -> Result<Value, Value> {
    let key = call
        .get("channel")
        .ok_or_else(|| ok_false("channel_not_found"))?;
    let ts = call
        .get("message_ts")
        .ok_or_else(|| ok_false("message_not_found"))?;
    let mut data = lock(&call.st.data);
    let id = visible(&data.slack.channels, key)?.id.clone();
    let channel = data
        .slack
        .channels
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(|| ok_false("channel_not_found"))?;
    let (_, thread) = message_at(channel, ts).ok_or_else(|| ok_false("message_not_found"))?;
    let mut permalink = format!(
        "https://acme.slack.com/archives/{id}/p{}",
        ts.replace('.', "")
    );
    if let Some(parent) = thread {
        permalink.push_str(&format!("?thread_ts={parent}&cid={id}"));
    }
    Ok(json!({ "ok": true, "channel": id, "permalink": permalink }))
}
