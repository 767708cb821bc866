//! `atoll dns`: the DNS daemon, and `atoll dns lookup` / `atoll dns records` to query it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use atoll_dns::settings::DnsSettings;
use clap::{Args, Subcommand};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::Value;

use crate::operator::Context;
use crate::table;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DnsArgs {
    #[command(subcommand)]
    command: Option<DnsCommand>,
    /// TOML file with the same keys as the flags (flags win)
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: DnsSettings,
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Ask a DNS server (UDP, then TCP if the answer was truncated)
    Lookup {
        name: String,
        /// A, AAAA, SRV, SOA, NS, ANY, …
        #[arg(default_value = "A")]
        record_type: String,
        /// The server to ask
        #[arg(long, env = "ATOLL_DNS", default_value = "127.0.0.1:53")]
        server: SocketAddr,
    },
    /// List the records Atoll's DNS serves, by framework and task
    Records {
        /// Only this framework (by name)
        #[arg(long)]
        framework: Option<String>,
        /// The DNS server's HTTP API
        #[arg(long, env = "ATOLL_DNS_HTTP", default_value = "http://127.0.0.1:8123")]
        http: String,
    },
}

/// Resolves on SIGINT or SIGTERM.
pub async fn stop_signal() {
    crate::daemons::stop_signal().await
}

pub async fn dns(ctx: &Context, args: DnsArgs, master_flag: Option<String>) -> anyhow::Result<i32> {
    match args.command {
        Some(DnsCommand::Lookup { name, record_type, server }) => lookup(ctx, &name, &record_type, server).await,
        Some(DnsCommand::Records { framework, http }) => records(ctx, framework.as_deref(), &http).await.map(|()| 0),
        None => {
            let file = match &args.config {
                Some(path) => DnsSettings::from_file(path)?,
                None => DnsSettings::default(),
            };
            let mut settings = args.settings.over(file);
            if master_flag.is_some() {
                settings.master = master_flag;
            }
            let options = settings.resolve()?;
            atoll_dns::daemon::run(options, stop_signal()).await?;
            Ok(0)
        }
    }
}

async fn lookup(ctx: &Context, name: &str, record_type: &str, server: SocketAddr) -> anyhow::Result<i32> {
    let kind: RecordType =
        record_type.to_ascii_uppercase().parse().map_err(|_| anyhow!("`{record_type}` is not a record type"))?;
    let fqdn = Name::from_ascii(name).with_context(|| format!("`{name}` is not a domain name"))?;
    let mut query = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(fqdn, kind));
    let bytes = query.to_vec()?;
    let socket = tokio::net::UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
    socket.send_to(&bytes, server).await?;
    let mut buffer = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
        .await
        .map_err(|_| anyhow!("no answer from {server} within 5 s"))??;
    let mut answer = Message::from_vec(&buffer[..n])?;
    if answer.metadata.truncation {
        answer = over_tcp(&bytes, server).await?;
    }
    if ctx.json {
        let records = |section: &[hickory_proto::rr::Record]| section.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        let value = serde_json::json!({
            "rcode": answer.metadata.response_code.to_string(),
            "aa": answer.metadata.authoritative,
            "answer": records(&answer.answers),
            "authority": records(&answer.authorities),
            "additional": records(&answer.additionals),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            ";; {} from {server}{}",
            answer.metadata.response_code,
            if answer.metadata.authoritative { ", authoritative" } else { "" }
        );
        for (title, section) in
            [("ANSWER", &answer.answers), ("AUTHORITY", &answer.authorities), ("ADDITIONAL", &answer.additionals)]
        {
            if !section.is_empty() {
                println!(";; {title}");
                for record in section.iter() {
                    println!("{record}");
                }
            }
        }
    }
    Ok(if answer.answers.is_empty() { 1 } else { 0 })
}

async fn over_tcp(query: &[u8], server: SocketAddr) -> anyhow::Result<Message> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(server)).await??;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut length = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut length)).await??;
    let mut body = vec![0u8; u16::from_be_bytes(length) as usize];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body)).await??;
    Ok(Message::from_vec(&body)?)
}

fn rand_id() -> u16 {
    // Any id will do for one outstanding query; the low bits of the clock are enough.
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()) & 0xffff) as u16
}

async fn records(ctx: &Context, framework: Option<&str>, http: &str) -> anyhow::Result<()> {
    let client = crate::client::Client::new(http)?;
    let enumerate: Value = client.get("/v1/enumerate").await?;
    let mut rows = Vec::new();
    let mut selected = Vec::new();
    for fw in enumerate["frameworks"].as_array().into_iter().flatten() {
        let name = fw["name"].as_str().unwrap_or("");
        if framework.is_some_and(|f| f != name) {
            continue;
        }
        selected.push(fw.clone());
        for task in fw["tasks"].as_array().into_iter().flatten() {
            for record in task["records"].as_array().into_iter().flatten() {
                rows.push(vec![
                    record["name"].as_str().unwrap_or("").to_owned(),
                    record["rtype"].as_str().unwrap_or("").to_owned(),
                    record["host"].as_str().unwrap_or("").to_owned(),
                    task["id"].as_str().unwrap_or("").to_owned(),
                ]);
            }
        }
    }
    if let Some(f) = framework
        && selected.is_empty()
    {
        bail!("no framework named `{f}` has records");
    }
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&Value::Array(selected))?);
    } else {
        table::print(&["NAME", "TYPE", "VALUE", "TASK"], &rows);
    }
    Ok(())
}
