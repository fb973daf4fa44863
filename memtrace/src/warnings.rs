//! Warnings: what memtrace could not do and what the trace lacks because of
//! it. Each is printed on stderr when it happens and kept for the trace's
//! `warnings`, so a saved trace says what its run said.
#[derive(Debug, Default)]
pub struct Warnings(Vec<String>);

impl Warnings {
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        eprintln!("memtrace: warning: {message}");
        self.0.push(message);
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}
