//! The library's `nif_init` entry (erl_nif: `ERL_NIF_INIT`), written out
//! because `rustler::init!` (0.39) offers `load` but no `upgrade` callback,
//! and without one the VM refuses to load a new instance of
//! `ExMCP.Authorization.Native` (a code upgrade, `r/1` in IEx, a recompile in
//! a running node): "Upgrade not supported by this NIF library".
//!
//! On an upgrade the VM hands the same shared object to the new module
//! instance, so every static survives: the tokio runtime, calls in flight,
//! running embedded servers. What must move is the ownership of the three
//! resource types (erl_nif `enif_init_resource_type` with
//! `ERL_NIF_RT_TAKEOVER`): resource types belong to a module instance, and
//! when the old instance is purged the VM frees types nobody took over,
//! while `ResourceArc::new` would go on using the freed type.
//!
//! The takeover installs callbacks equivalent to the ones rustler registers
//! at `load` (rustler keeps its own private): drop the value that
//! `ResourceArc::new` placed at an aligned offset in the resource memory,
//! and forward `down`. The offset rule is rustler 0.39's
//! `align_alloced_mem_for_struct`; the version is pinned in Cargo.toml.

use std::ffi::CStr;
use std::mem::{align_of, MaybeUninit};
use std::sync::OnceLock;

use rustler::codegen_runtime::{
    c_int, c_void, handle_nif_init_call, inventory, ErlNifEntry, ErlNifEnv, ErlNifFunc, ErlNifTerm,
    ResourceRegistration,
};
use rustler::sys::{
    enif_init_resource_type, ErlNifMonitor, ErlNifPid, ErlNifResourceDown, ErlNifResourceDtor,
    ErlNifResourceFlags, ErlNifResourceTypeInit,
};
use rustler::{Env, LocalPid, Monitor, Resource, Term};

use crate::file_lock::FileLock;
use crate::pending::Pending;
use crate::runtime;
use crate::server::ServerResource;

const MODULE: &CStr = c"Elixir.ExMCP.Authorization.Native";

struct Entry(ErlNifEntry);

// The entry only holds pointers to 'static data (names, the leaked function
// table); the VM reads it, nothing writes it after it is built.
unsafe impl Send for Entry {}
unsafe impl Sync for Entry {}

static ENTRY: OnceLock<Entry> = OnceLock::new();

#[no_mangle]
extern "C" fn nif_init() -> *const ErlNifEntry {
    unsafe { rustler::codegen_runtime::internal_write_symbols() };
    let entry = ENTRY.get_or_init(|| {
        let funcs: &'static [ErlNifFunc] = Box::leak(
            inventory::iter::<rustler::Nif>()
                .map(rustler::Nif::get_def)
                .collect(),
        );
        let mut entry = ErlNifEntry::new(MODULE, funcs, load);
        entry.upgrade = Some(upgrade);
        Entry(entry)
    });
    &entry.0
}

/// First load: register the resource types, then `runtime::load`.
unsafe extern "C" fn load(
    env: *mut ErlNifEnv,
    _priv_data: *mut *mut c_void,
    load_info: ErlNifTerm,
) -> c_int {
    let env = Env::new_init_env(&env, env);
    if ResourceRegistration::register_all_collected(env).is_err() {
        return 1;
    }
    handle_nif_init_call(runtime::load, env, Term::new(env, load_info))
}

/// A new instance of the module loads the same library: take the resource
/// types over and keep everything else as it is.
unsafe extern "C" fn upgrade(
    env: *mut ErlNifEnv,
    _priv_data: *mut *mut c_void,
    _old_priv_data: *mut *mut c_void,
    load_info: ErlNifTerm,
) -> c_int {
    // A resource type added without a takeover here would be freed under
    // the new instance: refuse the upgrade instead.
    let known = inventory::iter::<ResourceRegistration>().count() == 3;
    let taken = known
        && take_over::<Pending>(env, None)
        && take_over::<FileLock>(env, None)
        && take_over::<ServerResource>(env, Some(down::<ServerResource>));
    if !taken {
        return 1;
    }
    let env = Env::new_init_env(&env, env);
    handle_nif_init_call(runtime::load, env, Term::new(env, load_info))
}

unsafe fn take_over<T: Resource>(env: *mut ErlNifEnv, down: Option<ErlNifResourceDown>) -> bool {
    // rustler names a type after `std::any::type_name`.
    let Ok(name) = std::ffi::CString::new(std::any::type_name::<T>()) else {
        return false;
    };
    let init = ErlNifResourceTypeInit {
        dtor: dtor::<T> as *const ErlNifResourceDtor,
        stop: std::ptr::null(),
        down: down.map_or(std::ptr::null(), |f| f as *const ErlNifResourceDown),
        members: if down.is_some() { 3 } else { 1 },
        dyncall: std::ptr::null(),
    };
    let mut tried = MaybeUninit::uninit();
    let found = enif_init_resource_type(
        env,
        name.as_ptr(),
        &init,
        ErlNifResourceFlags::ERL_NIF_RT_TAKEOVER,
        tried.as_mut_ptr(),
    );
    !found.is_null()
}

/// Where `ResourceArc::new` put the value (rustler 0.39,
/// `align_alloced_mem_for_struct`).
unsafe fn aligned<T>(memory: *mut c_void) -> *mut T {
    let offset = align_of::<T>() - (memory as usize % align_of::<T>());
    memory.cast::<u8>().add(offset).cast()
}

unsafe extern "C" fn dtor<T: Resource>(_env: *mut ErlNifEnv, memory: *mut c_void) {
    let value = aligned::<T>(memory);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        std::ptr::drop_in_place(value);
    }));
}

unsafe extern "C" fn down<T: Resource>(
    env: *mut ErlNifEnv,
    memory: *mut c_void,
    pid: *const ErlNifPid,
    monitor: *const ErlNifMonitor,
) {
    let env = Env::new(&env, env);
    let value = &*aligned::<T>(memory);
    let pid = LocalPid::from_c_arg(*pid);
    let monitor = Monitor::from_c_arg(*monitor);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        value.down(env, pid, monitor);
    }));
}
