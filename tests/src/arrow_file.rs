//! The Arrow IPC file: its layout, writing it, and opening it zero-copy
//! over a read-only mmap.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use anyhow::{bail, ensure, Context, Result};
use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow_buffer::Buffer;
use arrow_ipc::convert::fb_to_schema;
use arrow_ipc::reader::{read_footer_length, FileDecoder, FileReader};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use memmap2::Mmap;

use crate::pages::PageSet;

/// Schema metadata key tying a file to the generator that wrote it: a file
/// from another generator version or batch shape is rewritten, not reused.
const META_GENERATOR: &str = "memtrace_workload.generator";
const GENERATOR_VERSION: &str = "1";
const META_ROWS_PER_BATCH: &str = "memtrace_workload.rows_per_batch";

/// Shape of the file: `batches` record batches of `rows_per_batch` rows, each
/// row an Int64 `id` and a FixedSizeList<Float32, dim> `embedding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub batches: usize,
    pub rows_per_batch: usize,
    pub dim: usize,
}

impl Layout {
    /// Enough whole batches to reach `size_mib` MiB of column data (at least one).
    pub fn for_size(size_mib: u64, rows_per_batch: usize, dim: usize) -> Self {
        let target = size_mib * 1024 * 1024;
        let per_batch = Self::batch_data_bytes_for(rows_per_batch, dim);
        Self { batches: target.div_ceil(per_batch).max(1) as usize, rows_per_batch, dim }
    }

    fn batch_data_bytes_for(rows_per_batch: usize, dim: usize) -> u64 {
        (rows_per_batch * (8 + 4 * dim)) as u64
    }

    /// Bytes of column values in one batch (ids + embeddings, no padding).
    pub fn batch_data_bytes(&self) -> u64 {
        Self::batch_data_bytes_for(self.rows_per_batch, self.dim)
    }

    pub fn total_rows(&self) -> usize {
        self.batches * self.rows_per_batch
    }

    pub fn schema(&self) -> Schema {
        let item = Field::new("item", DataType::Float32, false);
        let metadata = HashMap::from([
            (META_GENERATOR.to_string(), GENERATOR_VERSION.to_string()),
            (META_ROWS_PER_BATCH.to_string(), self.rows_per_batch.to_string()),
        ]);
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("embedding", DataType::FixedSizeList(Arc::new(item), self.dim as i32), false),
        ])
        .with_metadata(metadata)
    }
}

/// The embedding of `row`, value `j`: a cheap deterministic formula, so any
/// run (and any test) can recompute the data without reading the file.
pub fn embedding_value(row: u64, j: usize) -> f32 {
    // A multiply-xorshift mix of (row, j): no two rows share a vector in
    // practice, so the search's top-10 is not a pile of ties.
    let mut h = row.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    // Top 24 bits → [-0.5, 0.5).
    (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
}

/// The `id` of `row` (ids are the global row numbers).
pub fn id_of_row(row: u64) -> i64 {
    row as i64
}

/// Checks whether `path` already holds a complete file with this layout:
/// the footer parses, the schema (incl. generator metadata) and batch count
/// match, and the file is at least as large as the column data. Returns why
/// not, for the progress log.
pub fn check_existing(path: &Path, layout: &Layout) -> std::result::Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let reader = FileReader::try_new(file, None).map_err(|e| format!("not an Arrow file: {e}"))?;
    if reader.schema().as_ref() != &layout.schema() {
        return Err("schema differs".into());
    }
    if reader.num_batches() != layout.batches {
        return Err(format!("{} record batches, want {}", reader.num_batches(), layout.batches));
    }
    let min_len = layout.batches as u64 * layout.batch_data_bytes();
    if len < min_len {
        return Err(format!("{len} bytes, want at least {min_len}"));
    }
    Ok(())
}

/// Writes the file with plain write(2) calls (no mapping), to a temporary
/// name in the same directory, then renames it into place so a killed run
/// never leaves a half-written file that looks reusable.
pub fn write_file(path: &Path, layout: &Layout) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp.{}",
        path.file_name().context("--file has no file name")?.to_string_lossy(),
        std::process::id()
    ));
    let result = write_to(&tmp, layout);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

fn write_to(tmp: &Path, layout: &Layout) -> Result<()> {
    let file = File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let schema = Arc::new(layout.schema());
    let mut writer = FileWriter::try_new(BufWriter::with_capacity(1 << 20, file), &schema)?;
    let item = match schema.field(1).data_type() {
        DataType::FixedSizeList(item, _) => item.clone(),
        other => bail!("unexpected embedding type {other}"),
    };
    for b in 0..layout.batches {
        let first = (b * layout.rows_per_batch) as u64;
        let rows = first..first + layout.rows_per_batch as u64;
        let ids = Int64Array::from_iter_values(rows.clone().map(id_of_row));
        let mut values = Vec::with_capacity(layout.rows_per_batch * layout.dim);
        for row in rows {
            values.extend((0..layout.dim).map(|j| embedding_value(row, j)));
        }
        let embedding =
            FixedSizeListArray::try_new(item.clone(), layout.dim as i32, Arc::new(Float32Array::from(values)), None)?;
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(embedding)])?;
        writer.write(&batch)?;
    }
    writer.finish()?;
    let mut out = writer.into_inner()?;
    out.flush()?;
    Ok(())
}

/// The file mapped read-only with its record batches decoded zero-copy: every
/// column buffer points into the one mapping, which stays alive (through an
/// `Arc` owner held by each buffer) until the last batch is dropped.
pub struct MappedArrow {
    pub batches: Vec<RecordBatch>,
    map_base: usize,
    map_len: usize,
    /// Lets teardown check that dropping the batches really unmapped the file.
    owner: Weak<Mmap>,
}

impl MappedArrow {
    /// Offset in the file of `bytes`, which must lie inside the mapping
    /// (proving the data was not copied to the heap).
    pub fn file_offset(&self, bytes: &[u8]) -> Result<u64> {
        let start = bytes.as_ptr() as usize;
        ensure!(
            start >= self.map_base && start + bytes.len() <= self.map_base + self.map_len,
            "buffer at {start:#x} (+{}) is outside the file mapping: not zero-copy",
            bytes.len()
        );
        Ok((start - self.map_base) as u64)
    }

    /// Drops the batches and reports whether the mapping is gone (munmapped).
    pub fn close(self) -> bool {
        let owner = self.owner.clone();
        drop(self);
        owner.upgrade().is_none()
    }
}

/// Maps `file` and decodes its footer, schema and every record batch's
/// message header, without touching column values. Every byte range read is
/// added to `pages` (`page_size` granularity).
pub fn open_zero_copy(
    file: &File,
    layout: &Layout,
    advice: memmap2::Advice,
    pages: &mut PageSet,
    page_size: u64,
) -> Result<MappedArrow> {
    // SAFETY: the workload owns the file and nothing truncates it while
    // mapped; memtrace's tests don't either.
    let mmap = unsafe { Mmap::map(file) }.context("mmap of the Arrow file failed")?;
    // MADV_NORMAL is the default: skip the syscall, like a program that
    // gives no advice.
    if advice != memmap2::Advice::Normal {
        mmap.advise(advice).with_context(|| format!("madvise({advice:?}) on the file mapping failed"))?;
    }
    let mmap = Arc::new(mmap);
    let map_base = mmap.as_ptr() as usize;
    let map_len = mmap.len();
    let owner = Arc::downgrade(&mmap);
    ensure!(map_len >= 16, "file too small to be an Arrow file");
    let whole = {
        let ptr = NonNull::new(mmap.as_ptr() as *mut u8).context("null mapping")?;
        // SAFETY: ptr..ptr+map_len is the live mapping, kept alive by the Arc
        // handed over as the buffer's owner.
        unsafe { Buffer::from_custom_allocation(ptr, map_len, mmap) }
    };

    // Trailer: footer length + "ARROW1".
    let trailer_start = map_len - 10;
    let footer_len = read_footer_length(whole[trailer_start..].try_into()?)?;
    ensure!(footer_len + 10 <= map_len, "footer length {footer_len} too large");
    let footer_start = trailer_start - footer_len;
    pages.add_range(footer_start as u64, (footer_len + 10) as u64, page_size);
    let footer = arrow_ipc::root_as_footer(&whole[footer_start..trailer_start])
        .map_err(|e| anyhow::anyhow!("footer does not parse: {e}"))?;
    let schema = Arc::new(fb_to_schema(footer.schema().context("footer has no schema")?));
    ensure!(schema.as_ref() == &layout.schema(), "schema of the file differs from the expected layout");

    // Leading magic and schema message: read and checked against the footer,
    // as a careful reader would.
    let schema_msg_end = read_leading_schema(&whole, &schema)?;
    pages.add_range(0, schema_msg_end as u64, page_size);

    let blocks = footer.recordBatches().context("footer lists no record batches")?;
    ensure!(blocks.len() == layout.batches, "file has {} record batches, want {}", blocks.len(), layout.batches);
    // require_alignment: fail instead of silently copying a misaligned
    // buffer to the heap, which would break zero-copy.
    let decoder = FileDecoder::new(schema.clone(), footer.version()).with_require_alignment(true);
    let mut batches = Vec::with_capacity(blocks.len());
    for block in blocks.iter() {
        let offset = block.offset() as usize;
        let meta_len = block.metaDataLength() as usize;
        let len = meta_len + block.bodyLength() as usize;
        ensure!(offset + len <= map_len, "record batch block outside the file");
        // Only the message header (metaDataLength bytes at `offset`) is read:
        // the decoder slices the body into buffers without looking at them,
        // and validation of non-null primitive columns checks lengths only.
        pages.add_range(offset as u64, meta_len as u64, page_size);
        let data = whole.slice_with_length(offset, len);
        let batch = decoder.read_record_batch(block, &data)?.context("record batch block holds no record batch")?;
        ensure!(
            batch.num_rows() == layout.rows_per_batch,
            "record batch has {} rows, want {}",
            batch.num_rows(),
            layout.rows_per_batch
        );
        batches.push(batch);
    }

    let mapped = MappedArrow { batches, map_base, map_len, owner };
    // Zero-copy check (pointer arithmetic only, reads nothing).
    for batch in &mapped.batches {
        let values = embedding_values(batch)?;
        mapped.file_offset(as_bytes(values))?;
        let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().context("id column is not Int64")?;
        mapped.file_offset(ids.values().inner().as_slice())?;
    }
    Ok(mapped)
}

/// Parses the leading `ARROW1` magic and the schema message after it, checks
/// it equals `schema`, and returns the end offset of that message.
fn read_leading_schema(whole: &Buffer, schema: &Schema) -> Result<usize> {
    ensure!(&whole[..6] == b"ARROW1", "file does not start with ARROW1");
    // The magic is padded to the writer's alignment (8 or 64) with zeros;
    // the schema message begins with the 0xFFFFFFFF continuation marker.
    let start = (8..=64)
        .step_by(8)
        .find(|&o| whole.len() >= o + 8 && whole[o..o + 4] == [0xff; 4])
        .context("no schema message after the leading magic")?;
    let meta_len = i32::from_le_bytes(whole[start + 4..start + 8].try_into()?);
    ensure!(meta_len > 0, "bad schema message length {meta_len}");
    let end = start + 8 + meta_len as usize;
    ensure!(end <= whole.len(), "schema message runs past the file");
    let message = arrow_ipc::root_as_message(&whole[start + 8..end])
        .map_err(|e| anyhow::anyhow!("schema message does not parse: {e}"))?;
    let fb = message.header_as_schema().context("first message is not a schema")?;
    ensure!(&fb_to_schema(fb) == schema, "leading schema differs from the footer's");
    Ok(end)
}

/// The Float32 values of a batch's `embedding` column (one slice of
/// rows × dim values, pointing into the mapping).
pub fn embedding_values(batch: &RecordBatch) -> Result<&[f32]> {
    let list = batch
        .column(1)
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .context("embedding column is not a FixedSizeList")?;
    let values = list.values().as_any().downcast_ref::<Float32Array>().context("embedding values are not Float32")?;
    Ok(values.values().as_ref())
}

/// The bytes of an f32 slice (for offset arithmetic; nothing is read).
pub fn as_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: same memory, u8 has no alignment or validity requirements.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "memtrace-workload-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn layout_rounds_up_to_whole_batches() {
        let l = Layout::for_size(1, 1024, 128);
        assert_eq!(l.batch_data_bytes(), 1024 * 520);
        assert_eq!(l.batches, 2);
        assert_eq!(Layout::for_size(1, 16, 4).batches, (1 << 20) / (16 * 24) + 1);
    }

    #[test]
    fn write_check_and_open_zero_copy() {
        let dir = tmp_dir();
        let path = dir.join("w.arrow");
        let layout = Layout { batches: 5, rows_per_batch: 100, dim: 8 };
        assert!(check_existing(&path, &layout).is_err());
        write_file(&path, &layout).unwrap();
        check_existing(&path, &layout).unwrap();
        let other = Layout { batches: 6, ..layout };
        assert!(check_existing(&path, &other).is_err());

        let file = File::open(&path).unwrap();
        let mut pages = PageSet::new();
        let mapped = open_zero_copy(&file, &layout, memmap2::Advice::Normal, &mut pages, 4096).unwrap();
        assert_eq!(mapped.batches.len(), 5);
        assert!(pages.count() >= 1);
        let v = embedding_values(&mapped.batches[3]).unwrap();
        assert_eq!(v.len(), 100 * 8);
        assert_eq!(v[8 * 7 + 5], embedding_value(3 * 100 + 7, 5));
        assert!(mapped.file_offset(as_bytes(v)).unwrap() > 0);
        assert!(mapped.close());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
