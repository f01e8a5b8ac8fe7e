//! `denorun top <type>`: a live terminal view of a type's workers, redrawn every second from
//! what supervisors publish (`board`): the stream's length, pending entries and dead letters
//! at the top, then a row per worker. `q`, Esc or Ctrl-C quits.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::board::{self, Board};
use crate::keys::Keys;
use crate::topology::Conn;

const REFRESH: Duration = Duration::from_secs(1);

pub async fn run(conn: &mut Conn, keys: &Keys) -> anyhow::Result<i32> {
    let mut board = board::read(conn, keys).await?;
    let mut terminal = ratatui::init();
    let result = async {
        let mut last = Instant::now();
        loop {
            terminal.draw(|frame| draw(frame, keys, &board))?;
            let wait = REFRESH.saturating_sub(last.elapsed());
            if event::poll(wait)? {
                if let Event::Key(key) = event::read()? {
                    let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                    if key.kind == KeyEventKind::Press
                        && (key.code == KeyCode::Char('q') || key.code == KeyCode::Esc || ctrl_c)
                    {
                        return Ok(0);
                    }
                }
            }
            if last.elapsed() >= REFRESH {
                board = board::read(conn, keys).await?;
                last = Instant::now();
            }
        }
    }
    .await;
    ratatui::restore();
    result
}

fn draw(frame: &mut Frame, keys: &Keys, board: &Board) {
    let [head, table] = Layout::vertical([Constraint::Length(4), Constraint::Fill(1)]).areas(frame.area());
    let supervisor = board.supervisor.as_deref().unwrap_or("not running");
    let summary = format!("supervisor: {supervisor}\n{}", board::stream_line(board));
    let title = format!(" denorun top {} — q quits ", keys.worker_type());
    frame.render_widget(Paragraph::new(summary).block(Block::bordered().title(title)), head);

    let header =
        Row::new(["ID", "STATE", "PID", "UPTIME", "REQ/S", "P50 MS", "P99 MS", "HEAP", "RESTARTS", "LAST EXIT"])
            .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = board.rows.iter().map(|row| {
        Row::new([
            row.id.clone(),
            row.state.clone(),
            row.pid.clone(),
            board::uptime(row.uptime_s),
            row.rps.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into()),
            board::millis(row.p50_ms),
            board::millis(row.p99_ms),
            board::heap(row),
            row.restarts.clone(),
            row.last_exit.clone(),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Fill(1),
    ];
    let empty = if board.rows.is_empty() { format!(" no workers: push ids on {} ", keys.start) } else { String::new() };
    frame.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title(empty)), table);
}
