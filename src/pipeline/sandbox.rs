//! The sandbox around plugins: engine settings, CPU deadlines and memory caps.
//!
//! CPU: the engine's epoch advances every [`TICK`]; when a call's deadline
//! tick arrives, the callback below compares the time the *guest* has used in
//! this call (wall time minus time spent in host calls such as relaying a
//! message upstream) with the budget. Under budget it yields to tokio (so a
//! busy plugin never starves other sessions) and goes on; over budget it traps.
//! Memory: the pooling allocator caps each linear memory, and the store
//! limiter turns a refused `memory.grow` into a trap instead of an
//! allocation failure the guest might mishandle.

use std::time::Duration;

use anyhow::Result;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

use super::host::CallClock;
use super::HostState;

/// How often the epoch advances.
pub const TICK: Duration = Duration::from_millis(5);

pub fn engine(config: &crate::config::Config, slots: u32, plugins: u32) -> Result<Engine> {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // A plugin's memory is capped, so reserve exactly that much address space
    // per memory (with a guard region) instead of the default 4 GiB.
    let memory = config.sandbox.memory_limit as u64;
    c.memory_reservation(memory);
    c.memory_guard_size(64 * 1024 * 1024);
    c.memory_reservation_for_growth(0);
    c.max_wasm_stack(1024 * 1024);
    c.async_stack_size(2 * 1024 * 1024);

    let instances = slots.saturating_mul(plugins);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_memory_size(config.sandbox.memory_limit)
        .max_memories_per_component(2)
        .max_core_instances_per_component(16)
        .max_tables_per_component(16)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(4 << 20)
        // Reset reused slots by rewriting only the pages a plugin dirtied
        // (PAGEMAP_SCAN, Linux 6.7+) instead of unmapping and faulting them
        // in again, and batch what still needs madvise: page faults and TLB
        // shootdowns are most of an instantiation's cost.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .decommit_batch_size(16);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&c)?)
}

/// Advances the engine's epoch on a plain thread, independent of tokio, so
/// a runtime whose workers are all busy still interrupts a spinning plugin.
pub struct Ticker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Ticker {
    pub fn start(engine: Engine) -> Ticker {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch thread");
        Ticker { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn configure_store(store: &mut Store<HostState>) {
    store.limiter(|state| &mut state.limits);
    store.epoch_deadline_callback(|ctx| {
        let state = ctx.data();
        if state.clock.guest_time() > state.call_timeout {
            return Err(wasmtime::Error::new(Fault::Timeout(state.call_timeout)));
        }
        Ok(UpdateDeadline::Yield(1))
    });
}

/// Runs a hook call, and stops it if the plugin's own time passes
/// `timeout` while it is blocked outside wasm code (e.g. sleeping through a
/// WASI call), where the epoch callback cannot run. Dropping the call leaves
/// the instance unusable; the caller discards it.
pub async fn watch<T>(
    call: impl std::future::Future<Output = wasmtime::Result<T>>,
    clock: &CallClock,
    timeout: Duration,
) -> wasmtime::Result<T> {
    tokio::pin!(call);
    // Most calls finish in their first poll (no async host call on the
    // way): no timer is needed for them.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(result) = first {
        return result;
    }
    loop {
        // Normally the call ends long before this first timer fires.
        let left = timeout.saturating_sub(clock.guest_time()) + TICK * 4;
        tokio::select! {
            result = &mut call => return result,
            _ = tokio::time::sleep(left) => {
                if clock.guest_time() > timeout {
                    return Err(wasmtime::Error::new(Fault::Timeout(timeout)));
                }
            }
        }
    }
}

/// Starts the CPU budget of one hook call.
pub fn begin_call(store: &mut Store<HostState>) {
    let state = store.data_mut();
    state.clock.begin();
    state.slow_calls = 0;
    state.signatures = 0;
    state.counter_calls = 0;
    store.set_epoch_deadline(1);
}

#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("exceeded its CPU time budget of {0:?} for one call")]
    Timeout(Duration),
}

/// A one-line description of why a plugin call failed.
pub fn describe_fault(e: &wasmtime::Error) -> String {
    if let Some(f) = e.downcast_ref::<Fault>() {
        return f.to_string();
    }
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        let what = match trap {
            wasmtime::Trap::UnreachableCodeReached => {
                "trapped (unreachable: a panic or abort in the plugin)".to_string()
            }
            wasmtime::Trap::MemoryOutOfBounds => "trapped (out-of-bounds memory access)".to_string(),
            wasmtime::Trap::StackOverflow => "trapped (stack overflow)".to_string(),
            wasmtime::Trap::AllocationTooLarge => "exceeded its memory limit".to_string(),
            other => format!("trapped ({other})"),
        };
        return what;
    }
    let text = format!("{e:#}");
    if text.contains("memory") && (text.contains("limit") || text.contains("grow")) {
        return format!("exceeded its memory limit ({text})");
    }
    text.replace('\n', " ")
}
