//! Vault micro-benchmark: token issue and verify rates per core, and secret decrypt latency.
//! Run with `bench/vault/run.sh` (a release build). Plain `main`, no harness: each figure is
//! the median of several timed rounds, printed as a Markdown table.

use std::time::{Duration, Instant};

use sumun_vault::{LocalMasterKey, SecretBytes, SecretMeta, Vault, VerifyPolicy};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `f` `n` times per round for `rounds` rounds; returns operations per second (median).
fn rate(rounds: usize, n: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for i in 0..n {
            f(i);
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    median(rates)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sumun-vault-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = LocalMasterKey::generate()?;
    let key_text = key.to_base64();
    let mut vault = Vault::init(&dir, Box::new(key), None)?;
    for i in 0..100 {
        vault.put(
            &format!("pg/app{i}"),
            &SecretBytes::from_slice(b"0123456789abcdef0123456789abcdef"),
            SecretMeta::default(),
        )?;
    }

    let signer = vault.token_signer()?;
    let verifier = vault.token_verifier(VerifyPolicy::default())?;
    let now = sumun_vault::store::now_unix_secs();
    let token = signer.issue("app_user", Some("app"), "prod-db-gateway", now, 900)?;
    let token_str = token.expose_str().ok_or("token is ASCII")?.to_string();

    let issue = rate(5, 20_000, |_| {
        let t = signer
            .issue("app_user", Some("app"), "prod-db-gateway", now, 900)
            .expect("issue");
        std::hint::black_box(t);
    });
    let verify1 = rate(5, 20_000, |_| {
        let c = verifier
            .verify(&token_str, "prod-db-gateway", now)
            .expect("verify");
        std::hint::black_box(c);
    });
    // Two threads at once: the machine's total, to show verification scales with cores.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let total_verify = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    rate(5, 20_000, |_| {
                        let c = verifier
                            .verify(&token_str, "prod-db-gateway", now)
                            .expect("verify");
                        std::hint::black_box(c);
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .sum::<f64>()
    });
    let refused = rate(5, 20_000, |_| {
        let r = verifier.verify(&token_str, "another-gateway", now);
        std::hint::black_box(r.is_err());
    });

    let mut lat = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let name = format!("pg/app{}", i % 100);
        let t = Instant::now();
        let v = vault.get(&name)?;
        lat.push(t.elapsed());
        std::hint::black_box(v);
    }
    lat.sort();

    let mut opens = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let k = LocalMasterKey::from_base64(key_text.expose_str().ok_or("ascii")?)?;
        let v = Vault::open_with(&dir, Box::new(k))?;
        opens.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(v);
    }
    let mut puts = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        vault.put(
            &format!("bench/put{i}"),
            &SecretBytes::from_slice(b"x"),
            SecretMeta::default(),
        )?;
        puts.push(t.elapsed().as_secs_f64() * 1e3);
    }

    println!("| measure | result |");
    println!("|---|---|");
    println!("| token length | {} bytes |", token_str.len());
    println!("| token issue, 1 thread | {:.0} /s |", issue);
    println!("| token verify, 1 thread | {:.0} /s |", verify1);
    println!(
        "| token verify, {threads} threads together | {:.0} /s ({:.0} /s per core) |",
        total_verify,
        total_verify / threads as f64
    );
    println!(
        "| token refused (wrong audience, signature checked), 1 thread | {:.0} /s |",
        refused
    );
    println!(
        "| secret decrypt (`Vault::get`), p50 / p99 / max | {:.2} / {:.2} / {:.1} µs |",
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
        lat[lat.len() - 1].as_secs_f64() * 1e6
    );
    println!(
        "| vault open (100 secrets: checksum, KEK unwrap, HMAC), median | {:.2} ms |",
        median(opens)
    );
    println!(
        "| `put` (lock, re-read, seal, fsync, rename), median | {:.2} ms |",
        median(puts)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
