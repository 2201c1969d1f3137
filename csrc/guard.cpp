// Device guard and accelerator hooks for the toony PrivateUse1 device.
//
// There is one device and one in-order queue, so streams and events are
// trivial: every stream is the default stream, an event is a marker that is
// complete once the queue has drained.
#include "toony.h"

#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

namespace toony {
namespace {

constexpr c10::DeviceType kType = c10::DeviceType::PrivateUse1;

void check_index(c10::DeviceIndex index) {
  TORCH_CHECK(index >= -1 && index < kDeviceCount, "toony: invalid device index ", static_cast<int>(index),
              "; there is ", static_cast<int>(kDeviceCount), " toony device");
}

struct ToonyGuardImpl final : c10::impl::DeviceGuardImplInterface {
  ToonyGuardImpl() = default;
  explicit ToonyGuardImpl(c10::DeviceType t) {
    TORCH_CHECK(t == kType, "ToonyGuardImpl made for ", t);
  }

  c10::DeviceType type() const override { return kType; }

  c10::Device exchangeDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kType, "expected a toony device, got ", d);
    check_index(d.index());
    return {kType, 0};
  }
  c10::Device getDevice() const override { return {kType, 0}; }
  void setDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kType, "expected a toony device, got ", d);
    check_index(d.index());
  }
  void uncheckedSetDevice(c10::Device /*d*/) const noexcept override {}

  c10::Stream getStream(c10::Device d) const noexcept override {
    return c10::Stream(c10::Stream::DEFAULT, c10::Device(kType, d.index() < 0 ? 0 : d.index()));
  }
  c10::Stream getDefaultStream(c10::Device d) const override { return getStream(d); }
  c10::Stream getNewStream(c10::Device d, int /*priority*/) const override { return getStream(d); }
  c10::Stream getStreamFromGlobalPool(c10::Device d, bool /*isHighPriority*/) const override {
    return getStream(d);
  }
  c10::Stream exchangeStream(c10::Stream s) const noexcept override { return getStream(s.device()); }

  c10::DeviceIndex deviceCount() const noexcept override { return kDeviceCount; }

  // An event only needs to be non-null once recorded; everything before it in
  // the single queue is done once the queue is synchronized.
  void record(void** event, const c10::Stream& /*stream*/, const c10::DeviceIndex /*device_index*/,
              const c10::EventFlag /*flag*/) const override {
    *event = reinterpret_cast<void*>(uintptr_t{1});
  }
  void block(void* /*event*/, const c10::Stream& /*stream*/) const override {}
  bool queryEvent(void* /*event*/) const override { return true; }
  void destroyEvent(void* /*event*/, const c10::DeviceIndex /*device_index*/) const noexcept override {}
  bool queryStream(const c10::Stream& /*stream*/) const override { return true; }
  void synchronizeStream(const c10::Stream& /*stream*/) const override { call_synchronize(); }
  void synchronizeEvent(void* /*event*/) const override { call_synchronize(); }
  void synchronizeDevice(const c10::DeviceIndex /*device_index*/) const override { call_synchronize(); }
  void recordDataPtrOnStream(const c10::DataPtr& /*data_ptr*/, const c10::Stream& /*stream*/) const override {}
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, ToonyGuardImpl)

struct ToonyHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex /*device_index*/) const override { return true; }
  void init() const override {}

  c10::DeviceIndex deviceCount() const override { return kDeviceCount; }
  void setCurrentDevice(c10::DeviceIndex device) const override { check_index(device); }
  c10::DeviceIndex getCurrentDevice() const override { return 0; }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex device) const override {
    check_index(device);
    return 0;
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex /*device*/) const override { return 0; }

  const at::Generator& getDefaultGenerator(c10::DeviceIndex device_index) const override {
    return default_generator(device_index);
  }
  at::Generator getNewGenerator(c10::DeviceIndex device_index) const override {
    return make_generator(device_index);
  }

  at::Device getDeviceFromPtr(void* data) const override {
    TORCH_CHECK(is_toony_address(data), "toony: ", data, " is not a toony device address");
    return {kType, 0};
  }

  bool isPinnedPtr(const void* data) const override { return is_pinned_host_ptr(data); }
  at::Allocator* getPinnedMemoryAllocator() const override { return pinned_host_allocator(); }

  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t newsize) const override {
    resize_storage_bytes(storage.unsafeGetStorageImpl(), newsize);
  }
};

// Registered at load time, together with the guard and the allocator, so the
// device is never half-registered on the C++ side.
const bool g_hooks_registered = [] {
  at::RegisterPrivateUse1HooksInterface(new ToonyHooks());
  return true;
}();

}  // namespace
}  // namespace toony
