// Shared declarations for the toony PrivateUse1 extension.
//
// The device memory is opaque: the allocator hands PyTorch fake addresses in a
// reserved range that the host can never dereference, and the Python side maps
// each address to an OpenCL buffer. Nothing in this extension does math.
#pragma once

#include <ATen/core/Generator.h>
#include <c10/core/Allocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/Storage.h>

#include <cstdint>
#include <vector>

namespace toony {

constexpr c10::DeviceIndex kDeviceCount = 1;

// Fake addresses live in [kAddressBase, kAddressLimit). Bits 52..55 are set, so
// on x86-64 these are non-canonical (any dereference faults) and on AArch64
// they lie above every user virtual address (48- or 52-bit VA), even with
// top-byte-ignore. They are never reused, so an address always names exactly
// one allocation, even before the Python side has drained the freed queue.
constexpr uint64_t kAddressBase = 0x00F0000000000000ULL;
constexpr uint64_t kAddressLimit = 0x00FF000000000000ULL;
constexpr uint64_t kAddressAlign = 4096;

inline bool is_toony_address(const void* p) {
  auto a = reinterpret_cast<uint64_t>(p);
  return a >= kAddressBase && a < kAddressLimit;
}

// --- allocator.cpp -------------------------------------------------------
c10::DeviceAllocator* device_allocator();
c10::Allocator* pinned_host_allocator();
bool is_pinned_host_ptr(const void* p);

// Nbytes of the live allocation whose base is `addr`, or -1 if none.
int64_t allocation_nbytes(uint64_t addr);
// Addresses freed since the last call (the Python side releases their buffers).
std::vector<uint64_t> drain_freed();
int64_t memory_allocated();
int64_t max_memory_allocated();
int64_t live_allocation_count();
void reset_peak_memory_stats();
void set_memory_limit(int64_t nbytes);

// Python callbacks, set once at registration. copy_data and synchronize take
// the GIL to call them; the deleter never calls Python.
void set_copy_callback(void* py_callable);
void set_synchronize_callback(void* py_callable);
void call_synchronize();

// Reallocates `storage` to `new_nbytes`, keeping the first min(old, new) bytes
// through the allocator's device-to-device copy_data. Used by resize_ and by
// the hooks' resizePrivateUse1Bytes.
void resize_storage_bytes(c10::StorageImpl* storage, size_t new_nbytes);

// --- generator.cpp ---------------------------------------------------------
const at::Generator& default_generator(c10::DeviceIndex index);
at::Generator make_generator(c10::DeviceIndex index);

}  // namespace toony
