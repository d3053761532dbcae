//! Hand-written WGSL kernels on a wgpu device: buffers, launches, and handing a kernel's output
//! to burn's tensors.
//!
//! burn's wgpu backend is fused (`Fusion<CubeBackend>`): its tensors are handles in a lazy
//! stream of operations, not device buffers. A kernel of ours runs at once on the device's
//! cubecl client, over plain buffers; an output that the rest of burn must see is then
//! registered with the fusion client as an already computed tensor, the way burn-fusion's own
//! `float_from_data` registers an upload. Inputs are never taken from a pending fused operation,
//! so the eager launch cannot overtake what it reads.

use burn::backend::DispatchDevice;
use burn::backend::fusion::stream::StreamId;
use burn::backend::fusion::{FusionBackend, FusionTensor};
use burn::backend::fusion::{NoOp, get_client};
use burn::backend::ir::{BackendIr, InitOperationIr, OperationIr};
use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, Wgpu};
use burn::cubecl::Device as CubeDevice;
use burn::cubecl::client::Client;
use burn::cubecl::prelude::{CubeCount, CubeDim};
use burn::cubecl::server::{Handle, KernelArguments};
use burn::tensor::kind::Basic;

use crate::backend::read::ReadError;
use burn::tensor::{BackendPrimitive, DType, Device, Shape, Tensor};

/// The fusion runtime of burn's wgpu backend.
type Runtime = <CubeBackend as FusionBackend>::FusionRuntime;

/// A wgpu device, seen as its cubecl client: where our kernels run.
#[derive(Clone)]
pub struct Gpu {
    device: CubeDevice,
    client: Client,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("device", &self.device).finish()
    }
}

impl Gpu {
    /// The wgpu device behind `device`, or `None` for any other backend.
    pub fn of(device: &Device) -> Option<Self> {
        let plain = device.clone().inner();
        match plain.as_dispatch() {
            DispatchDevice::Cube(cube @ CubeDevice::Wgpu(_)) => Some(Self {
                client: cube.client(),
                device: cube.clone(),
            }),
            _ => None,
        }
    }

    /// What the device lets one kernel have: storage buffers bound, bytes of workgroup
    /// memory, invocations a workgroup.
    pub fn limits(&self) -> (usize, usize, usize) {
        let hardware = &self.client.properties().hardware;
        (
            // cubecl reports one buffer fewer than the device's storage buffers a stage, kept
            // for the buffer of array sizes wgpu adds on Metal for its own kernels; wgpu
            // validates our kernels against the device's own limit.
            hardware.max_bindings as usize + 1,
            hardware.max_shared_memory_size,
            hardware.max_units_per_cube as usize,
        )
    }

    /// A new buffer holding `values`.
    pub fn upload<T: bytemuck::Pod>(&self, values: &[T]) -> Handle {
        self.client.create_from_slice(bytemuck::cast_slice(values))
    }

    /// A new buffer of `bytes` bytes, contents undefined.
    pub fn empty(&self, bytes: usize) -> Handle {
        self.client.empty(bytes)
    }

    /// Runs `kernel` over `groups` workgroups of `workgroup` invocations, with `buffers` bound
    /// in order (binding 0, 1, …).
    pub fn launch<K: KernelSource + 'static>(
        &self,
        kernel: K,
        workgroup: u32,
        groups: u32,
        buffers: &[&Handle],
    ) {
        let arguments = buffers.iter().fold(KernelArguments::new(), |args, handle| {
            args.with_buffer((*handle).clone().binding())
        });
        self.client.launch(
            Box::new(SourceKernel::new(kernel, CubeDim::new_1d(workgroup))),
            CubeCount::Static(groups, 1, 1),
            arguments,
        );
    }

    /// A buffer's contents as f32 (waits for the device).
    pub fn read_f32(&self, handle: &Handle) -> Result<Vec<f32>, ReadError> {
        self.read(handle)
    }

    /// A buffer's contents as u32 (waits for the device).
    pub fn read_u32(&self, handle: &Handle) -> Result<Vec<u32>, ReadError> {
        self.read(handle)
    }

    fn read<T: bytemuck::Pod>(&self, handle: &Handle) -> Result<Vec<T>, ReadError> {
        let bytes = self
            .client
            .read_one(handle.clone())
            .map_err(|e| ReadError::new(format!("{e:?}")))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes[..]))
    }

    /// The buffer `handle` as a contiguous burn tensor of `shape` and `dtype` (float or int, as
    /// `K` says), on the fused wgpu backend, ready for burn's operations. The tensor shares the
    /// buffer.
    pub fn tensor<const D: usize, K>(
        &self,
        handle: Handle,
        shape: [usize; D],
        dtype: DType,
    ) -> Tensor<D, K>
    where
        K: Basic + BackendPrimitive<Wgpu, Primitive = FusionTensor<Runtime>>,
    {
        let shape = Shape::new(shape);
        let cube = CubeTensor::new_contiguous(
            self.client.clone(),
            self.device.clone(),
            shape.clone(),
            handle,
            dtype,
        );
        let fusion = get_client::<CubeBackend>(&self.device);
        let handle = <CubeBackend as BackendIr>::float_tensor_handle(cube);
        let desc = InitOperationIr::create(shape, dtype, || fusion.register_tensor_handle(handle));
        let mut outputs = fusion.register(
            StreamId::current(),
            OperationIr::Init(desc),
            NoOp::<CubeBackend>::new(),
        );
        match outputs.pop() {
            Some(primitive) => Tensor::from_primitive::<Wgpu>(primitive),
            None => unreachable!("an init operation has exactly one output"),
        }
    }
}
