//! One module per top-level subcommand, and what they share: the async runtime, logging,
//! and the tables printed for people.

pub mod apply;
pub mod bgp;
pub mod crds;
pub mod import;
pub mod install_cni;
pub mod ipam;
pub mod lab;
pub mod node;
pub mod pool;
pub mod table;

/// How the daemons log: structured, to stderr, as text for people or JSON for collectors.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "SERVAL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing's env-filter syntax, e.g. `info` or `bgp=debug,info`).
    #[arg(long, default_value = "info", env = "SERVAL_LOG")]
    pub log_level: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    Ok(())
}

/// How often a daemon gives the allocator's free pages back to the kernel.
const HEAP_TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Give the pages freed inside the allocator's heaps back to the kernel, now and then,
/// for as long as the runtime runs (the speaker and the node agent). glibc returns memory
/// on its own only from the top of a heap: what a load leaves free between live
/// allocations (frames read and UPDATEs encoded for a thousand peers, between sessions'
/// state) would otherwise stay resident for the life of the process. Trimming a heap
/// with little free in it takes microseconds.
pub fn spawn_heap_trim() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(HEAP_TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            trim_heap();
        }
    });
}

/// Return the allocator's free pages to the kernel; true when it released any.
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and may be called from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// glibc's allocator arenas: the main one and one more. By default every thread that
/// meets a locked arena gets its own (up to eight per core), each with its own free
/// memory that no other thread reuses: with two workers, a reflector of 1,000 clients
/// held 0.6–1.4 MiB more heap at its peak. `MALLOC_ARENA_MAX` in the environment wins.
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's arenas at [`MALLOC_ARENAS`] unless the environment sets its own cap;
/// before the runtime's threads start. True when the cap was set here.
pub fn limit_malloc_arenas() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes no pointers; M_ARENA_MAX only bounds future arenas.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The runtime every subcommand runs on: two workers are plenty for a node agent.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    limit_malloc_arenas();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("serval")
        .build()?)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    fn rss_kib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        pages * page / 1024
    }

    #[test]
    fn trimming_returns_pages_freed_between_live_allocations() {
        // 48 MiB in 48 KiB blocks (below the size glibc maps on its own), each followed by
        // a small block that stays: freed, the large ones are holes under live memory,
        // which free() does not give back on its own.
        let (mut large, mut small) = (Vec::new(), Vec::new());
        for i in 0..1024u32 {
            large.push(vec![i as u8 | 1; 48 * 1024]);
            small.push(vec![i as u8; 32]);
        }
        drop(large);
        let before = rss_kib();
        assert!(super::trim_heap(), "nothing was returned");
        let after = rss_kib();
        assert!(
            before.saturating_sub(after) >= 16 * 1024,
            "RSS {before} KiB before trimming, {after} KiB after"
        );
        drop(small);
    }

    /// Heaps glibc's `malloc_info` lists: the main arena and each other one.
    fn malloc_heaps() -> usize {
        let mut buf: *mut libc::c_char = std::ptr::null_mut();
        let mut len: libc::size_t = 0;
        // SAFETY: open_memstream sets buf/len on fclose; the buffer is freed below.
        let xml = unsafe {
            let f = libc::open_memstream(&mut buf, &mut len);
            assert!(!f.is_null());
            assert_eq!(libc::malloc_info(0, f), 0);
            libc::fclose(f);
            let xml = std::slice::from_raw_parts(buf as *const u8, len).to_vec();
            libc::free(buf.cast());
            xml
        };
        String::from_utf8_lossy(&xml).matches("<heap nr=").count()
    }

    /// Threads allocating at once, as the runtime's workers do.
    fn allocate_on_threads(n: usize) {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut keep = Vec::new();
                    for i in 0..20_000 {
                        keep.push(vec![i as u8; 64 + i % 200]);
                    }
                    barrier.wait();
                    drop(keep);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    const CHILD: &str = "SERVAL_TEST_ARENA_CHILD";

    /// Run in a process of its own (the test harness's threads have arenas already):
    /// this test binary again, only this test, with `CHILD` set.
    #[test]
    fn the_runtime_caps_the_allocator_arenas() {
        if let Some(mode) = std::env::var_os(CHILD) {
            if mode == "capped" {
                assert!(super::limit_malloc_arenas());
            }
            allocate_on_threads(8);
            println!("heaps={}", malloc_heaps());
            return;
        }
        let heaps = |mode: &str| -> usize {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "cmd::tests::the_runtime_caps_the_allocator_arenas",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, mode)
                .env_remove("MALLOC_ARENA_MAX")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let heaps = text.split("heaps=").nth(1).expect("the child's count");
            heaps.split_whitespace().next().unwrap().parse().unwrap()
        };
        let free = heaps("free");
        let capped = heaps("capped");
        assert!(
            free > 2,
            "eight threads at once without a cap: {free} heaps"
        );
        assert!(capped <= 2, "with the cap: {capped} heaps");
    }
}
