//! Reading a GGUF file: its metadata (typed look-ups that name the file and key on error) and
//! its tensors.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use foil_core::{Error, Result};

/// An open GGUF file: the parsed header plus a reader for tensor data.
pub(crate) struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| Error::format(path, format!("not a readable GGUF file: {e}")))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::format(&self.path, message)
    }

    fn get(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.err(format!("missing metadata key \"{key}\"")))
    }

    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    pub fn string(&self, key: &str) -> Result<String> {
        self.get(key)?
            .to_string()
            .cloned()
            .map_err(|e| self.err(format!("metadata \"{key}\": {e}")))
    }

    /// An integer of any width, as usize.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n = match v {
            Value::U8(x) => *x as i128,
            Value::I8(x) => *x as i128,
            Value::U16(x) => *x as i128,
            Value::I16(x) => *x as i128,
            Value::U32(x) => *x as i128,
            Value::I32(x) => *x as i128,
            Value::U64(x) => *x as i128,
            Value::I64(x) => *x as i128,
            _ => return Err(self.err(format!("metadata \"{key}\" is not an integer"))),
        };
        usize::try_from(n).map_err(|_| self.err(format!("metadata \"{key}\" is out of range: {n}")))
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.get(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            _ => Err(self.err(format!("metadata \"{key}\" is not a float"))),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.content.metadata.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.err(format!("metadata \"{key}\" is not a bool"))),
        }
    }

    /// The items of an array-valued key.
    fn array(&self, key: &str) -> Result<&Vec<Value>> {
        self.get(key)?
            .to_vec()
            .map_err(|e| self.err(format!("metadata \"{key}\": {e}")))
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|_| self.err(format!("metadata \"{key}\" holds a non-string")))
            })
            .collect()
    }

    pub fn ints(&self, key: &str) -> Result<Vec<i64>> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::I32(x) => Ok(*x as i64),
                Value::U32(x) => Ok(*x as i64),
                Value::I64(x) => Ok(*x),
                Value::U8(x) => Ok(*x as i64),
                Value::I8(x) => Ok(*x as i64),
                _ => Err(self.err(format!("metadata \"{key}\" holds a non-integer"))),
            })
            .collect()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn tensor(&mut self, name: &str) -> Result<QTensor> {
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| Error::format(&self.path, format!("tensor \"{name}\": {e}")))
    }

    /// The format and `[rows, columns]` of a 2-D tensor, without reading it.
    pub fn matrix_info(&self, name: &str) -> Result<(GgmlDType, (usize, usize))> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| self.err(format!("no tensor \"{name}\"")))?;
        let dims = info
            .shape
            .dims2()
            .map_err(|e| self.err(format!("tensor \"{name}\": {e}")))?;
        Ok((info.ggml_dtype, dims))
    }

    /// Appends the stored bytes of tensor `name` to `out`, as the file holds them (no
    /// conversion, so no second copy of a large matrix is ever held).
    pub fn append_tensor_bytes(&mut self, name: &str, out: &mut Vec<u8>) -> Result<()> {
        let (dtype, elems, offset) = {
            let info = self
                .content
                .tensor_infos
                .get(name)
                .ok_or_else(|| self.err(format!("no tensor \"{name}\"")))?;
            (info.ggml_dtype, info.shape.elem_count(), info.offset)
        };
        if !elems.is_multiple_of(dtype.block_size()) {
            return Err(self.err(format!(
                "tensor \"{name}\": {elems} values are not whole blocks of {}",
                dtype.block_size()
            )));
        }
        let size = elems / dtype.block_size() * dtype.type_size();
        let start = self.content.tensor_data_offset.saturating_add(offset);
        let at = out.len();
        out.resize(at + size, 0);
        let read = self
            .reader
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.reader.read_exact(&mut out[at..]));
        if let Err(e) = read {
            out.truncate(at);
            return Err(self.err(format!(
                "tensor \"{name}\": {size} bytes at offset {start}: {e}"
            )));
        }
        Ok(())
    }

    /// A 1-D f32 tensor (norm weights, biases), dequantized.
    pub fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        let v = t
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| Error::format(&self.path, format!("tensor \"{name}\": {e}")))?;
        if v.len() != len {
            return Err(self.err(format!(
                "tensor \"{name}\" has {} values, expected {len}",
                v.len()
            )));
        }
        Ok(v)
    }
}
