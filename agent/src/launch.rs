//! What a task process gets: its argv, its environment (ports, identity, sandbox) and its
//! cgroup limits — pure functions of the TaskInfo and the agent's facts, so they are tested
//! without launching anything.

use std::collections::BTreeMap;
use std::path::Path;

use atoll_proto::model::{AgentId, CommandInfo, FrameworkId, TaskInfo};

use crate::cgroups::Limits;

/// Everything besides the TaskInfo that goes into a task's environment.
#[derive(Debug, Clone)]
pub struct EnvContext<'a> {
    pub framework_id: &'a FrameworkId,
    pub agent_id: &'a AgentId,
    pub sandbox: &'a Path,
    pub hostname: &'a str,
    /// The agent's own PATH, used when the command sets none.
    pub agent_path: Option<&'a str>,
}

/// The argv the executor runs. A shell command runs under `/bin/sh -c`; otherwise `value` is
/// the program and `arguments` the whole argv, so `arguments[0]` only names it (as Mesos does).
pub fn task_argv(task: &TaskInfo) -> Vec<String> {
    command_argv(&task.command)
}

/// [`task_argv`] for any command (a COMMAND health check's, too).
pub fn command_argv(command: &CommandInfo) -> Vec<String> {
    if command.shell {
        return vec!["/bin/sh".to_owned(), "-c".to_owned(), command.value.clone()];
    }
    let mut argv = vec![command.value.clone()];
    argv.extend(command.arguments.iter().skip(1).cloned());
    argv
}

/// The task's environment, sorted by name. Variables the command sets itself win over the
/// ones the agent provides (frameworks such as Marathon set PORT0 themselves).
pub fn task_env(task: &TaskInfo, ctx: &EnvContext<'_>) -> Vec<(String, String)> {
    let mut env = BTreeMap::new();
    let ports: Vec<u64> = task.resources.ranges("ports").values().collect();
    for (i, port) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), port.to_string());
    }
    if let Some(first) = ports.first() {
        env.insert("PORT".to_owned(), first.to_string());
    }
    if !ports.is_empty() {
        env.insert("PORTS".to_owned(), ports.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
    }
    if let Some(discovery) = &task.discovery {
        for port in discovery.ports.iter().filter(|p| !p.name.is_empty()) {
            env.insert(format!("PORT_{}", env_name(&port.name)), port.number.to_string());
        }
    }
    let sandbox = ctx.sandbox.display().to_string();
    for (name, value) in [
        ("MESOS_TASK_ID", task.task_id.as_str()),
        ("ATOLL_TASK_ID", task.task_id.as_str()),
        ("MESOS_FRAMEWORK_ID", ctx.framework_id.as_str()),
        ("ATOLL_FRAMEWORK_ID", ctx.framework_id.as_str()),
        ("MESOS_AGENT_ID", ctx.agent_id.as_str()),
        ("ATOLL_AGENT_ID", ctx.agent_id.as_str()),
        ("MESOS_SANDBOX", &sandbox),
        ("MESOS_DIRECTORY", &sandbox),
        ("ATOLL_SANDBOX", &sandbox),
        ("HOST", ctx.hostname),
    ] {
        env.insert(name.to_owned(), value.to_owned());
    }
    if let Some(path) = ctx.agent_path {
        env.insert("PATH".to_owned(), path.to_owned());
    }
    for (name, value) in &task.command.environment {
        env.insert(name.clone(), value.clone());
    }
    env.into_iter().collect()
}

/// `web-http` → `WEB_HTTP`: upper case, anything but ASCII letters and digits becomes `_`.
fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// Cgroup limits from the task's resources: `cpus` becomes a quota, `mem` (MiB) a memory limit.
pub fn task_limits(task: &TaskInfo) -> Limits {
    let cpus = task.resources.scalar("cpus");
    let mem = task.resources.scalar("mem");
    Limits {
        cpus: (!cpus.is_zero()).then(|| cpus.as_f64()),
        mem_bytes: (!mem.is_zero()).then(|| (mem.as_f64() * 1024.0 * 1024.0).round() as u64),
    }
}

/// `SIGKILL` for 9, `signal 77` for what has no name here.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_proto::model::{DiscoveryInfo, DiscoveryPort, Labels, Resources, TaskId};

    fn task(command: CommandInfo) -> TaskInfo {
        TaskInfo {
            name: "web".into(),
            task_id: TaskId::new("web-1"),
            agent_id: AgentId::new("a1"),
            resources: "cpus:0.5;mem:64;ports:[31002-31002,31000-31000]".parse::<Resources>().expect("resources"),
            command,
            labels: Labels::default(),
            discovery: None,
            kill_grace_period_secs: None,
            health_check: None,
            networks: Vec::new(),
        }
    }

    fn ctx<'a>(fw: &'a FrameworkId, agent: &'a AgentId) -> EnvContext<'a> {
        EnvContext {
            framework_id: fw,
            agent_id: agent,
            sandbox: Path::new("/data/sandboxes/f1/web-1/r1"),
            hostname: "node1",
            agent_path: Some("/usr/bin:/bin"),
        }
    }

    #[test]
    fn argv_for_shell_and_direct_commands() {
        assert_eq!(task_argv(&task(CommandInfo::shell("echo $HOME"))), ["/bin/sh", "-c", "echo $HOME"]);
        let argv = CommandInfo::argv(vec!["/bin/echo".into(), "a b".into(), "c".into()]);
        assert_eq!(task_argv(&task(argv)), ["/bin/echo", "a b", "c"]);
        // arguments[0] only names the program; value is what runs.
        let mut renamed = CommandInfo::argv(vec!["echo".into(), "x".into()]);
        renamed.value = "/bin/echo".into();
        assert_eq!(task_argv(&task(renamed)), ["/bin/echo", "x"]);
        let mut bare = CommandInfo::argv(vec![]);
        bare.value = "/bin/true".into();
        assert_eq!(task_argv(&task(bare)), ["/bin/true"]);
    }

    #[test]
    fn env_has_ports_identity_and_sandbox() {
        let mut t = task(CommandInfo::shell("true"));
        t.discovery = Some(DiscoveryInfo {
            visibility: "FRAMEWORK".into(),
            name: String::new(),
            ports: vec![
                DiscoveryPort {
                    number: 31000,
                    name: "http-api".into(),
                    protocol: "tcp".into(),
                    labels: Labels::default(),
                },
                DiscoveryPort { number: 31002, name: String::new(), protocol: "tcp".into(), labels: Labels::default() },
            ],
            labels: Labels::default(),
        });
        let (fw, agent) = (FrameworkId::new("f1"), AgentId::new("a1"));
        let env: BTreeMap<String, String> = task_env(&t, &ctx(&fw, &agent)).into_iter().collect();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("PORT0"), Some("31000"));
        assert_eq!(get("PORT1"), Some("31002"));
        assert_eq!(get("PORT"), Some("31000"));
        assert_eq!(get("PORTS"), Some("31000,31002"));
        assert_eq!(get("PORT_HTTP_API"), Some("31000"));
        assert_eq!(get("MESOS_TASK_ID"), Some("web-1"));
        assert_eq!(get("ATOLL_FRAMEWORK_ID"), Some("f1"));
        assert_eq!(get("MESOS_AGENT_ID"), Some("a1"));
        assert_eq!(get("MESOS_SANDBOX"), Some("/data/sandboxes/f1/web-1/r1"));
        assert_eq!(get("MESOS_DIRECTORY"), get("ATOLL_SANDBOX"));
        assert_eq!(get("HOST"), Some("node1"));
        assert_eq!(get("PATH"), Some("/usr/bin:/bin"));
        assert_eq!(env.len(), 16, "{env:?}");
    }

    #[test]
    fn command_environment_wins_and_no_ports_means_no_port_vars() {
        let mut command = CommandInfo::shell("true");
        command.environment = vec![("PATH".into(), "/opt/bin".into()), ("PORT0".into(), "80".into())];
        let mut t = task(command);
        let (fw, agent) = (FrameworkId::new("f1"), AgentId::new("a1"));
        let env: BTreeMap<_, _> = task_env(&t, &ctx(&fw, &agent)).into_iter().collect();
        assert_eq!(env["PATH"], "/opt/bin");
        assert_eq!(env["PORT0"], "80");
        t.resources = "cpus:1".parse().expect("resources");
        t.command.environment.clear();
        let env: BTreeMap<_, _> =
            task_env(&t, &EnvContext { agent_path: None, ..ctx(&fw, &agent) }).into_iter().collect();
        assert!(!env.keys().any(|k| k.starts_with("PORT")), "{env:?}");
        assert!(!env.contains_key("PATH"));
    }

    #[test]
    fn limits_come_from_cpus_and_mem() {
        let l = task_limits(&task(CommandInfo::shell("true")));
        assert_eq!(l, Limits { cpus: Some(0.5), mem_bytes: Some(64 << 20) });
        let mut t = task(CommandInfo::shell("true"));
        t.resources = Resources::new();
        assert_eq!(task_limits(&t), Limits::default());
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(77), "signal 77");
    }
}
