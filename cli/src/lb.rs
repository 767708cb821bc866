//! `atoll lb`: the node's layer-4 load balancer daemon, and `atoll lb --cleanup`.

use std::path::PathBuf;

use atoll_lb::LbSettings;
use clap::Args;

#[derive(Args)]
pub struct LbArgs {
    /// TOML file with the same keys as the flags (flags win)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Detach the programs, remove the pinned maps and links, the VIP pool's blackhole route
    /// and the saved plan, and exit
    #[arg(long)]
    cleanup: bool,
    #[command(flatten)]
    settings: LbSettings,
}

pub async fn lb(args: LbArgs, master_flag: Option<String>) -> anyhow::Result<i32> {
    let file = match &args.config {
        Some(path) => LbSettings::from_file(path)?,
        None => LbSettings::default(),
    };
    let mut settings = args.settings.over(file);
    if master_flag.is_some() {
        settings.master = master_flag;
    }
    let options = settings.resolve()?;
    if args.cleanup {
        let report = atoll_lb::cleanup(&options).await?;
        println!(
            "detached {} link(s), unpinned {} map(s) in {}{}, removed the blackhole route for {}{}",
            report.dataplane.links_detached.len(),
            report.dataplane.unpinned.len(),
            options.l4.pin_dir.display(),
            if report.dataplane.left_alone.is_empty() {
                String::new()
            } else {
                format!(" (left alone: {})", report.dataplane.left_alone.join(", "))
            },
            options.vip_pool,
            if report.plan_removed { " and the saved plan" } else { "" },
        );
        return Ok(0);
    }
    atoll_lb::run(options, crate::daemons::stop_signal()).await?;
    Ok(0)
}
