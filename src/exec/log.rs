//! A command's log file, created only when there is something to keep: the first line the command
//! prints, or an ending other than exit code 0. A quiet success leaves no file (thousands of
//! no-output steps would otherwise leave thousands of two-line files).

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

pub(crate) struct Log {
    path: Option<PathBuf>,
    /// What ran, written first when the file is created.
    header: String,
    file: Option<tokio::fs::File>,
    /// Opening failed once: do not try again for every line.
    failed: bool,
}

impl Log {
    pub fn new(path: Option<PathBuf>, header: String) -> Log {
        Log {
            path,
            header,
            file: None,
            failed: false,
        }
    }

    async fn open(&mut self) -> Option<&mut tokio::fs::File> {
        if self.file.is_none() && !self.failed {
            let path = self.path.as_ref()?;
            if let Some(d) = path.parent() {
                let _ = tokio::fs::create_dir_all(d).await;
            }
            match tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
            {
                Ok(mut f) => {
                    let _ = f.write_all(self.header.as_bytes()).await;
                    self.file = Some(f);
                }
                Err(_) => self.failed = true,
            }
        }
        self.file.as_mut()
    }

    /// A line of output (the file is created, with the header, if it is the first).
    pub async fn line(&mut self, text: &str) {
        if let Some(f) = self.open().await {
            let _ = f.write_all(text.as_bytes()).await;
        }
    }

    /// The closing line: written when the file exists or when `keep` (the command failed).
    pub async fn end(&mut self, text: &str, keep: bool) {
        if (keep || self.file.is_some())
            && let Some(f) = self.open().await
        {
            let _ = f.write_all(text.as_bytes()).await;
            let _ = f.flush().await;
        }
    }
}
