//! The seccomp filters user code runs under: a deny list of what code never needs (debugging other
//! processes, mounts, kernel modules, keyrings, BPF, reboot, namespaces, ...) and, when the pool
//! has no network, of IP and packet sockets. Built once in the agent; installed in the child.

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{Error, Result};

/// Syscalls refused with EPERM whatever their arguments.
const DENIED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    libc::SYS_bpf,
    libc::SYS_reboot,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_lookup_dcookie,
    libc::SYS_personality,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// Namespace flags `clone` may not use: a new user namespace is the usual first step of a kernel
/// exploit, and the others would escape the agent's view of the session.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

/// Socket families refused when the pool has no network.
const NETWORK_FAMILIES: &[i32] = &[libc::AF_INET, libc::AF_INET6, libc::AF_PACKET];

/// The compiled filters, installed in order in the child.
pub struct Filters {
    pub programs: Vec<BpfProgram>,
}

/// Builds the filters for this machine's architecture.
pub fn build(allow_network: bool) -> Result<Filters> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| Error::Config(format!("sandbox.seccomp: unsupported architecture: {e:?}")))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
    // x86_64 and aarch64 both pass clone's flags in the first argument.
    let clone_rules = (0..64)
        .map(|bit| 1u64 << bit)
        .filter(|flag| CLONE_NAMESPACE_FLAGS & flag != 0)
        .map(|flag| rule(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag))
        .collect::<Result<Vec<_>>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    if !allow_network {
        let socket_rules = NETWORK_FAMILIES
            .iter()
            // `int domain`: only the low 32 bits are the argument.
            .map(|&family| rule(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, family as u64))
            .collect::<Result<Vec<_>>>()?;
        rules.insert(libc::SYS_socket, socket_rules);
    }
    let deny = compile(rules, libc::EPERM, arch)?;
    // clone3 passes its flags in memory seccomp cannot read; ENOSYS makes libc fall back to clone,
    // whose flags the filter above checks.
    let clone3 = compile(BTreeMap::from([(libc::SYS_clone3, Vec::new())]), libc::ENOSYS, arch)?;
    Ok(Filters { programs: vec![deny, clone3] })
}

fn rule(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> Result<SeccompRule> {
    let condition = SeccompCondition::new(arg, len, op, value)
        .map_err(|e| Error::Internal(format!("seccomp condition: {e}")))?;
    SeccompRule::new(vec![condition]).map_err(|e| Error::Internal(format!("seccomp rule: {e}")))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
    arch: TargetArch,
) -> Result<BpfProgram> {
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)
            .map_err(|e| Error::Internal(format!("seccomp filter: {e}")))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| Error::Internal(format!("seccomp compile: {e}")))
}
