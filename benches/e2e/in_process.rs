//! Section 1: in-process costs in this process, with an own timing loop: seal, open, a token
//! read, and validation + rendering + projection of a realistic answer of the standard tool.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::report::{kib, lat, progress, us, Lat, Table};
use crate::support::{fixtures, CANARY_ACCESS, CANARY_REFRESH};
use crate::TOOL;

/// `pr_body`: the upstream's answer to the standard request (recorded by section 5).
pub(crate) async fn section(table: &mut Table, pr_body: &[u8]) -> InProcess {
    progress("in-process: seal, open, token read, validate + render + project");
    let inproc = in_process(pr_body).await;
    table.section(
        "1. In-process (this process, one thread, per operation)",
        &["operation", "n", "p50", "p99", "max"],
    );
    for (name, l) in &inproc.rows {
        table.row(vec![
            name.clone(),
            l.n.to_string(),
            us(l.p50),
            us(l.p99),
            us(l.max),
        ]);
    }
    inproc
}

// ---- 1. in-process ----------------------------------------------------------------------------------

/// Time `f` call by call (after a warm-up): up to 20 000 iterations or 2 s.
pub(crate) fn time_op<S, T>(mut setup: impl FnMut() -> S, mut f: impl FnMut(S) -> T) -> Lat {
    for _ in 0..500 {
        black_box(f(setup()));
    }
    let mut samples = Vec::with_capacity(20_000);
    let started = Instant::now();
    while samples.len() < 20_000
        && (samples.len() < 1000 || started.elapsed() < Duration::from_secs(2))
    {
        let input = setup();
        let t = Instant::now();
        black_box(f(input));
        samples.push(t.elapsed());
    }
    lat(samples)
}

pub(crate) fn bench_record() -> keyward::vault::TokenRecord {
    use keyward::secret::SecretString;
    keyward::vault::TokenRecord {
        access_token: SecretString::new(format!("{CANARY_ACCESS}.gho_{}", "x".repeat(36))),
        refresh_token: Some(SecretString::new(format!(
            "{CANARY_REFRESH}.ghr_{}",
            "y".repeat(72)
        ))),
        token_type: "bearer".into(),
        expires_at: Some(chrono::Utc::now().timestamp() + 28_800),
        scopes: vec!["repo".into(), "read:user".into()],
        obtained_at: chrono::Utc::now().timestamp(),
        status: keyward::vault::ConnectionStatus::Active,
    }
}

pub(crate) struct InProcess {
    pub(crate) rows: Vec<(String, Lat)>,
    pub(crate) token_read: Lat,
}

pub(crate) async fn in_process(pr_body: &[u8]) -> InProcess {
    use keyward::catalog::Catalog;
    use keyward::exec::{project, render};
    use keyward::secret::SecretKey;
    use keyward::vault::{crypto, ConnKey, OpenMode, Vault};

    let mut rows = Vec::new();
    let key = SecretKey::generate();
    let plaintext = serde_json::to_vec(&bench_record()).unwrap();
    let ctx: [&[u8]; 4] = [b"default", b"github", b"default", &7u64.to_be_bytes()];
    rows.push((
        format!(
            "seal (token record, {} B, XChaCha20-Poly1305)",
            plaintext.len()
        ),
        time_op(|| (), |()| crypto::seal(&key, 1, &ctx, &plaintext)),
    ));
    let blob = crypto::seal(&key, 1, &ctx, &plaintext);
    rows.push((
        "open (token record)".into(),
        time_op(
            || (),
            |()| crypto::open(&blob, &ctx, |_| Some(&key)).unwrap(),
        ),
    ));

    let dir = tempfile::tempdir().unwrap();
    let home = keyward::config::Home {
        dir: dir.path().join("home"),
    };
    let vault = Vault::open(&home, OpenMode::Create).await.unwrap();
    let conn = ConnKey::new("default", "github", "default").unwrap();
    vault.put(&conn, None, &bench_record()).await.unwrap();
    let token_read = time_op(
        || (),
        |()| {
            let now = chrono::Utc::now().timestamp();
            // The owner reads in place: the future is ready when first polled, so the
            // smallest executor measures the read itself.
            let c = futures::executor::block_on(vault.get(&conn))
                .unwrap()
                .unwrap();
            black_box(c.record.needs_refresh(now, 300));
            c.record.access_token.expose().len()
        },
    );
    rows.push((
        "token read (vault get + open + expiry check)".into(),
        token_read,
    ));
    drop(vault);

    let catalog = Catalog::embedded();
    let (provider, tool) = catalog.tool(TOOL).unwrap();
    let args = fixtures::load(TOOL).arguments;
    rows.push((
        format!("validate + render {TOOL}"),
        time_op(
            || (),
            |()| {
                let valid = render::validate_args(tool, &args).unwrap();
                render::render(provider, tool, &valid).unwrap()
            },
        ),
    ));
    // What the executor does with the upstream answer: build only what the projection reads
    // (project::parse), project, redact. Building the whole answer, for comparison.
    let reads = project::Reads::of(tool, &[]);
    let headers = http::HeaderMap::new();
    let pruned = project::parse(&reads, pr_body).expect("the upstream answer is JSON");
    let projected = serde_json::to_vec(&project::project(tool, &headers, pruned.clone())).unwrap();
    rows.push((
        format!(
            "parse the whole answer ({} → serde_json::Value), for comparison",
            kib(pr_body.len())
        ),
        time_op(
            || (),
            |()| serde_json::from_slice::<Value>(pr_body).unwrap(),
        ),
    ));
    rows.push((
        "parse only what the projection reads (project::parse)".into(),
        time_op(|| (), |()| project::parse(&reads, pr_body).unwrap()),
    ));
    rows.push((
        format!("project 10 pull requests (→ {})", kib(projected.len())),
        time_op(|| pruned.clone(), |b| project::project(tool, &headers, b)),
    ));
    let redactor = keyward::secret::Redactor::of(&[keyward::secret::SecretString::new(format!(
        "{CANARY_ACCESS}.gho_x"
    ))]);
    rows.push((
        "validate + render + parse + project + redact (one call)".into(),
        time_op(
            || (),
            |()| {
                let valid = render::validate_args(tool, &args).unwrap();
                let request = render::render(provider, tool, &valid).unwrap();
                black_box(request);
                let body = project::parse(&reads, pr_body).unwrap();
                let projected = project::project(tool, &headers, body);
                redactor.value(projected)
            },
        ),
    ));
    InProcess { rows, token_read }
}
