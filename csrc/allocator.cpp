// The toony device allocator: unique fake addresses plus a table of live
// allocations. Device buffers themselves are created lazily by the Python side.
#include "toony.h"

#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <unordered_map>

namespace py = pybind11;

namespace toony {
namespace {

using c10::CachingAllocator::StatType;

std::mutex g_mutex;  // guards everything below
uint64_t g_next = kAddressBase;
std::unordered_map<uint64_t, size_t> g_live;
std::vector<uint64_t> g_freed;
c10::CachingDeviceAllocator::DeviceStats g_stats;
int64_t g_limit = 0;  // 0: no limit

// Raw PyObject* on purpose: a py::object with static storage would be
// destroyed after the interpreter is gone and crash at exit.
PyObject* g_copy_cb = nullptr;
PyObject* g_sync_cb = nullptr;

void update_stats_alloc(size_t n) {
  for (auto& s : {&g_stats.allocated_bytes, &g_stats.active_bytes, &g_stats.reserved_bytes,
                  &g_stats.requested_bytes}) {
    (*s)[static_cast<size_t>(StatType::AGGREGATE)].increase(n);
  }
  g_stats.allocation[static_cast<size_t>(StatType::AGGREGATE)].increase(1);
  g_stats.active[static_cast<size_t>(StatType::AGGREGATE)].increase(1);
  g_stats.segment[static_cast<size_t>(StatType::AGGREGATE)].increase(1);
}

void update_stats_free(size_t n) {
  for (auto& s : {&g_stats.allocated_bytes, &g_stats.active_bytes, &g_stats.reserved_bytes,
                  &g_stats.requested_bytes}) {
    (*s)[static_cast<size_t>(StatType::AGGREGATE)].decrease(n);
  }
  g_stats.allocation[static_cast<size_t>(StatType::AGGREGATE)].decrease(1);
  g_stats.active[static_cast<size_t>(StatType::AGGREGATE)].decrease(1);
  g_stats.segment[static_cast<size_t>(StatType::AGGREGATE)].decrease(1);
}

// Runs inside PyTorch's DataPtr destructor, possibly without the GIL and
// possibly during interpreter shutdown: bookkeeping only, no Python.
void toony_free(void* ctx) {
  if (ctx == nullptr) {
    return;
  }
  auto addr = reinterpret_cast<uint64_t>(ctx);
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_live.find(addr);
  if (it == g_live.end()) {
    return;
  }
  update_stats_free(it->second);
  g_live.erase(it);
  g_freed.push_back(addr);
}

std::string python_error_message(py::error_already_set& e) {
  // what() needs the GIL, which the caller holds.
  return e.what();
}

struct ToonyAllocator final : c10::DeviceAllocator {
  c10::DataPtr allocate(size_t nbytes) override {
    const c10::Device device(c10::DeviceType::PrivateUse1, 0);
    if (nbytes == 0) {
      // PyTorch treats a null data pointer as "no bytes"; no address needed.
      return {nullptr, nullptr, &toony_free, device};
    }
    std::lock_guard<std::mutex> lock(g_mutex);
    const int64_t in_use = g_stats.allocated_bytes[static_cast<size_t>(StatType::AGGREGATE)].current;
    if (g_limit > 0 && in_use + static_cast<int64_t>(nbytes) > g_limit) {
      g_stats.num_ooms += 1;
      TORCH_CHECK_WITH(OutOfMemoryError, false, "toony: out of device memory: tried to allocate ", nbytes,
                       " bytes with ", in_use, " bytes in use of a ", g_limit,
                       " byte limit. Free tensors or lower the batch size.");
    }
    const uint64_t span = (static_cast<uint64_t>(nbytes) + kAddressAlign - 1) / kAddressAlign * kAddressAlign;
    TORCH_CHECK_WITH(OutOfMemoryError, span <= kAddressLimit - g_next,
                     "toony: the fake address range is exhausted (asked for ", nbytes, " bytes)");
    const uint64_t addr = g_next;
    g_next += span;
    g_live.emplace(addr, nbytes);
    update_stats_alloc(nbytes);
    void* p = reinterpret_cast<void*>(addr);
    return {p, p, &toony_free, device};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &toony_free; }

  // Device-to-device copy (storage resize, storage copies): the Python side
  // owns the buffers, so hand the addresses to it.
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    if (count == 0) {
      return;
    }
    TORCH_CHECK(is_toony_address(dest) && is_toony_address(src),
                "toony: copy_data expects two toony device addresses");
    TORCH_CHECK(g_copy_cb != nullptr, "toony: copy_data called before torch_toony registered its copy callback");
    py::gil_scoped_acquire gil;
    try {
      py::reinterpret_borrow<py::function>(g_copy_cb)(reinterpret_cast<uint64_t>(dest),
                                                        reinterpret_cast<uint64_t>(src), count);
    } catch (py::error_already_set& e) {
      TORCH_CHECK(false, "toony: device copy failed: ", python_error_message(e));
    }
  }

  bool initialized() override { return true; }

  // Nothing is cached: buffers are released as soon as their address is freed.
  void emptyCache(c10::MempoolId_t /*mempool_id*/) override {}

  // One in-order queue per device, so a block can never be reused too early.
  void recordStream(const c10::DataPtr& /*ptr*/, c10::Stream /*stream*/) override {}

  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(c10::DeviceIndex /*device*/) override {
    std::lock_guard<std::mutex> lock(g_mutex);
    return g_stats;
  }

  void resetAccumulatedStats(c10::DeviceIndex /*device*/) override {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (auto* arr : {&g_stats.allocation, &g_stats.segment, &g_stats.active, &g_stats.allocated_bytes,
                      &g_stats.reserved_bytes, &g_stats.active_bytes, &g_stats.requested_bytes}) {
      for (auto& s : *arr) {
        s.reset_accumulated();
      }
    }
    g_stats.num_ooms = 0;
  }

  void resetPeakStats(c10::DeviceIndex /*device*/) override {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (auto* arr : {&g_stats.allocation, &g_stats.segment, &g_stats.active, &g_stats.allocated_bytes,
                      &g_stats.reserved_bytes, &g_stats.active_bytes, &g_stats.requested_bytes}) {
      for (auto& s : *arr) {
        s.reset_peak();
      }
    }
  }
};

ToonyAllocator g_allocator;

// --- "pinned" host memory ---------------------------------------------------
// PyTorch asks the current accelerator for pinned host memory (pin_memory(),
// DataLoader). Ordinary host memory is all an OpenCL host copy needs; we only
// remember the blocks so is_pinned() answers truthfully.
std::mutex g_pinned_mutex;
std::map<uintptr_t, size_t> g_pinned;  // base -> nbytes

void pinned_free(void* ctx) {
  if (ctx == nullptr) {
    return;
  }
  {
    std::lock_guard<std::mutex> lock(g_pinned_mutex);
    g_pinned.erase(reinterpret_cast<uintptr_t>(ctx));
  }
  c10::free_cpu(ctx);
}

struct PinnedHostAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    void* p = nbytes ? c10::alloc_cpu(nbytes) : nullptr;
    if (p != nullptr) {
      std::lock_guard<std::mutex> lock(g_pinned_mutex);
      g_pinned.emplace(reinterpret_cast<uintptr_t>(p), nbytes);
    }
    return {p, p, &pinned_free, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &pinned_free; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

PinnedHostAllocator g_pinned_allocator;

}  // namespace

REGISTER_ALLOCATOR(c10::DeviceType::PrivateUse1, &g_allocator)

c10::DeviceAllocator* device_allocator() { return &g_allocator; }
c10::Allocator* pinned_host_allocator() { return &g_pinned_allocator; }

bool is_pinned_host_ptr(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_pinned_mutex);
  auto it = g_pinned.upper_bound(a);
  if (it == g_pinned.begin()) {
    return false;
  }
  --it;
  return a < it->first + it->second;
}

int64_t allocation_nbytes(uint64_t addr) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_live.find(addr);
  return it == g_live.end() ? -1 : static_cast<int64_t>(it->second);
}

std::vector<uint64_t> drain_freed() {
  std::vector<uint64_t> out;
  std::lock_guard<std::mutex> lock(g_mutex);
  out.swap(g_freed);
  return out;
}

int64_t memory_allocated() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_stats.allocated_bytes[static_cast<size_t>(StatType::AGGREGATE)].current;
}

int64_t max_memory_allocated() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_stats.allocated_bytes[static_cast<size_t>(StatType::AGGREGATE)].peak;
}

int64_t live_allocation_count() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return static_cast<int64_t>(g_live.size());
}

void reset_peak_memory_stats() { g_allocator.resetPeakStats(0); }

void set_memory_limit(int64_t nbytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_limit = nbytes;
}

void set_copy_callback(void* py_callable) {
  auto* obj = static_cast<PyObject*>(py_callable);
  Py_XINCREF(obj);
  std::swap(g_copy_cb, obj);
  Py_XDECREF(obj);
}

void set_synchronize_callback(void* py_callable) {
  auto* obj = static_cast<PyObject*>(py_callable);
  Py_XINCREF(obj);
  std::swap(g_sync_cb, obj);
  Py_XDECREF(obj);
}

void call_synchronize() {
  if (g_sync_cb == nullptr || !Py_IsInitialized()) {
    return;
  }
  py::gil_scoped_acquire gil;
  try {
    py::reinterpret_borrow<py::function>(g_sync_cb)();
  } catch (py::error_already_set& e) {
    TORCH_CHECK(false, "toony: synchronize failed: ", python_error_message(e));
  }
}

void resize_storage_bytes(c10::StorageImpl* storage, size_t new_nbytes) {
  TORCH_CHECK(storage->resizable(), "Trying to resize storage that is not resizable");
  c10::Allocator* allocator = storage->allocator();
  if (allocator == nullptr) {
    allocator = &g_allocator;
  }
  c10::DataPtr new_data;
  if (new_nbytes != 0) {
    new_data = allocator->allocate(new_nbytes);
  }
  const size_t copy = std::min(new_nbytes, storage->nbytes());
  const void* old_ptr = storage->data_ptr().get();
  if (old_ptr != nullptr && copy > 0) {
    // Copy before the old allocation is released; if this throws, the
    // storage is untouched and the new allocation is freed.
    allocator->copy_data(new_data.get(), old_ptr, copy);
  }
  storage->set_data_ptr_noswap(std::move(new_data));
  storage->set_nbytes(new_nbytes);
}

}  // namespace toony
