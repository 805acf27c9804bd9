//! naga: parse and validate generated WGSL, and translate it to MSL (for
//! the `metal` target) and SPIR-V.

use crate::{CodegenError, Kernel};
use naga::back::{msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};

/// A kernel parsed and validated by naga.
#[derive(Debug)]
pub struct Validated {
    /// naga's IR of the kernel.
    pub module: naga::Module,
    /// The validator's analysis, needed by the backends.
    pub info: ModuleInfo,
}

/// Parses and validates `kernel`'s WGSL, with `f16` allowed when the kernel
/// enables it.
pub fn validate(kernel: &Kernel) -> Result<Validated, CodegenError> {
    let invalid = |message: String| CodegenError::Invalid {
        kernel: kernel.name.clone(),
        message,
    };
    let module = naga::front::wgsl::parse_str(&kernel.wgsl)
        .map_err(|e| invalid(e.emit_to_string(&kernel.wgsl)))?;
    let mut caps = Capabilities::empty();
    if kernel.uses_f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| invalid(e.emit_to_string(&kernel.wgsl)))?;
    if !module.entry_points.iter().any(|e| e.name == "main") {
        return Err(invalid("no entry point `main`".into()));
    }
    Ok(Validated { module, info })
}

/// Metal buffer slots of a kernel: binding `i` of group 0 is `[[buffer(i)]]`,
/// and the array-length table that WGSL's runtime-sized arrays need comes
/// right after the last binding. A host binding its buffers with
/// `setBuffer:offset:atIndex:` uses the same indices as the WGSL bindings.
pub fn msl_slots(kernel: &Kernel) -> msl::EntryPointResources {
    let mut resources = msl::BindingMap::default();
    let n = kernel.storage_buffers();
    for binding in 0..n {
        resources.insert(
            naga::ResourceBinding { group: 0, binding },
            msl::BindTarget {
                buffer: Some(binding as msl::Slot),
                mutable: binding >= kernel.inputs && binding < kernel.inputs + kernel.outputs,
                ..Default::default()
            },
        );
    }
    msl::EntryPointResources {
        resources,
        immediates_buffer: None,
        sizes_buffer: Some(n as msl::Slot),
    }
}

/// Translates `kernel` to Metal Shading Language 2.4 with real buffer slots
/// ([`msl_slots`]); missing bindings are an error, never faked.
pub fn to_msl(kernel: &Kernel) -> Result<String, CodegenError> {
    let v = validate(kernel)?;
    let mut options = msl::Options {
        lang_version: (2, 4),
        fake_missing_bindings: false,
        ..Default::default()
    };
    options
        .per_entry_point_map
        .insert("main".to_string(), msl_slots(kernel));
    let pipeline = msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, "main".to_string())),
        ..Default::default()
    };
    msl::write_string(&v.module, &v.info, &options, &pipeline)
        .map(|(src, _)| src)
        .map_err(|e| CodegenError::Translate {
            kernel: kernel.name.clone(),
            language: "MSL",
            message: e.to_string(),
        })
}

/// Translates `kernel` to SPIR-V 1.3 words (Vulkan 1.1), bindings as in WGSL.
pub fn to_spirv(kernel: &Kernel) -> Result<Vec<u32>, CodegenError> {
    let v = validate(kernel)?;
    let options = spv::Options {
        lang_version: (1, 3),
        flags: spv::WriterFlags::empty(),
        // In the SPIR-V writer this keeps each WGSL `@group/@binding` as the
        // descriptor set and binding, which is what a Vulkan host binds.
        fake_missing_bindings: true,
        ..Default::default()
    };
    spv::write_vec(&v.module, &v.info, &options, None).map_err(|e| CodegenError::Translate {
        kernel: kernel.name.clone(),
        language: "SPIR-V",
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COPY: &str = "@group(0) @binding(0) var<storage, read> x: array<f32>;\n\
        @group(0) @binding(1) var<storage, read_write> y: array<f32>;\n\
        @group(0) @binding(2) var<storage, read> params: array<u32>;\n\
        @compute @workgroup_size(64)\n\
        fn main(@builtin(global_invocation_id) gid: vec3<u32>) {\n\
            if (gid.x < params[0]) { y[gid.x] = x[gid.x]; }\n\
        }\n";

    #[test]
    fn valid_kernel_translates_with_real_slots() {
        let k = Kernel::new("copy", COPY.to_string(), 1, 1, 0);
        validate(&k).unwrap();
        let msl = to_msl(&k).unwrap();
        assert!(
            msl.contains("[[buffer(0)]]") && msl.contains("[[buffer(2)]]"),
            "{msl}"
        );
        // The sizes table for runtime-sized arrays sits after the last binding.
        assert!(msl.contains("[[buffer(3)]]"), "{msl}");
        let words = to_spirv(&k).unwrap();
        assert_eq!(words[0], 0x0723_0203, "SPIR-V magic");
    }

    #[test]
    fn invalid_kernel_names_itself_and_the_line() {
        let k = Kernel::new(
            "bad",
            COPY.replace("y[gid.x] = x[gid.x];", "y[gid.x] = q;"),
            1,
            1,
            0,
        );
        let e = validate(&k).unwrap_err().to_string();
        assert!(e.contains(&k.name) && e.contains('q'), "{e}");
    }
}
