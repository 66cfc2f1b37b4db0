//! The start-up floor for the benchmark: the least a provider can do, read
//! one line and write a fixed response, with no framework at all.

use std::io::{BufRead, Write};

fn main() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let mut stdout = std::io::stdout().lock();
    let _ =
        stdout.write_all(b"{\"createResourceResponse\":{\"outputProperties\":{\"value\":1}}}\n");
    let _ = stdout.flush();
}
