// The toony random generator: a counter-based (seed, offset) state, like
// CUDA's Philox generator. The op layer draws random numbers on the device
// from (seed, offset) and advances the offset by the numbers it consumed, so
// results are reproducible under torch.manual_seed. The state is 16 bytes:
// seed then offset, both uint64, native byte order.
#include "toony.h"

#include <ATen/EmptyTensor.h>
#include <ATen/core/GeneratorForPrivateuseone.h>
#include <c10/core/GeneratorImpl.h>
#include <c10/util/CallOnce.h>

#include <cstring>
#include <mutex>

namespace toony {
namespace {

struct ToonyGeneratorImpl final : c10::GeneratorImpl {
  explicit ToonyGeneratorImpl(c10::DeviceIndex index, uint64_t seed = c10::default_rng_seed_val)
      : c10::GeneratorImpl(c10::Device(c10::DeviceType::PrivateUse1, index),
                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1)),
        seed_(seed) {}

  void set_current_seed(uint64_t seed) override {
    seed_ = seed;
    offset_ = 0;
  }
  void set_offset(uint64_t offset) override { offset_ = offset; }
  uint64_t get_offset() const override { return offset_; }
  uint64_t current_seed() const override { return seed_; }
  uint64_t seed() override {
    const uint64_t s = c10::detail::getNonDeterministicRandom();
    set_current_seed(s);
    return s;
  }

  c10::intrusive_ptr<c10::TensorImpl> get_state() const override {
    auto state = at::detail::empty_cpu({kStateSize}, at::ScalarType::Byte, std::nullopt, std::nullopt, std::nullopt,
                                       std::nullopt);
    auto* p = static_cast<uint8_t*>(state.data_ptr());
    std::memcpy(p, &seed_, sizeof(seed_));
    std::memcpy(p + sizeof(seed_), &offset_, sizeof(offset_));
    return state.getIntrusivePtr();
  }

  void set_state(const c10::TensorImpl& new_state) override {
    TORCH_CHECK(new_state.dtype() == caffe2::TypeMeta::Make<uint8_t>() && new_state.numel() == kStateSize &&
                    new_state.is_contiguous() && new_state.device().is_cpu(),
                "toony: a generator state is a contiguous CPU uint8 tensor of ", kStateSize,
                " bytes (seed, offset); got ", new_state.numel(), " elements of ", new_state.dtype().name());
    const auto* p = static_cast<const uint8_t*>(new_state.data());
    std::memcpy(&seed_, p, sizeof(seed_));
    std::memcpy(&offset_, p + sizeof(seed_), sizeof(offset_));
  }

  static c10::DeviceType device_type() { return c10::DeviceType::PrivateUse1; }

 private:
  static constexpr int64_t kStateSize = 16;

  ToonyGeneratorImpl* clone_impl() const override {
    auto* gen = new ToonyGeneratorImpl(device().index(), seed_);
    gen->offset_ = offset_;
    return gen;
  }

  uint64_t seed_;
  uint64_t offset_ = 0;
};

}  // namespace

at::Generator make_generator(c10::DeviceIndex index) {
  if (index < 0) {
    index = 0;
  }
  return at::make_generator<ToonyGeneratorImpl>(index);
}

const at::Generator& default_generator(c10::DeviceIndex index) {
  static std::vector<at::Generator> generators;
  static c10::once_flag once;
  c10::call_once(once, [] {
    generators.reserve(kDeviceCount);
    for (c10::DeviceIndex i = 0; i < kDeviceCount; ++i) {
      generators.push_back(make_generator(i));
    }
  });
  if (index < 0) {
    index = 0;
  }
  TORCH_CHECK(index < kDeviceCount, "toony: no device ", static_cast<int>(index), "; there are ",
              static_cast<int>(kDeviceCount));
  return generators[index];
}

}  // namespace toony
