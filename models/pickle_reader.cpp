// Restricted pickle virtual machine for torch.save state_dicts. Values live in an arena owned by
// the unpickler (raw pointers, no reference counting), so self-referencing containers built by a
// hostile pickle cannot leak or recurse on destruction; nesting depth is tracked per value.
#include "models/pickle_reader.h"

#include <bit>
#include <cstring>
#include <deque>
#include <set>
#include <unordered_map>

#include "models/checkpoint.h"
#include "models/le_bytes.h"

namespace mlra {
namespace {

enum class VKind {
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kTuple,
  kList,
  kDict,
  kGlobal,
  kStorage,
  kTensor
};

struct Value {
  VKind kind = VKind::kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;              // string, or "module.name" of a global
  std::vector<Value*> items;  // tuple/list elements; dict: key0, value0, key1, value1, ...
  int depth = 0;              // container nesting below this value
  PickledStorage storage;
  PickledTensor tensor;
};

constexpr const char* kOrderedDict = "collections.OrderedDict";
constexpr const char* kRebuildTensor = "torch._utils._rebuild_tensor_v2";
constexpr const char* kRebuildParam = "torch._utils._rebuild_parameter";
constexpr const char* kRebuildParamState = "torch._utils._rebuild_parameter_with_state";

// torch._tensor._rebuild_from_type_v2 is deliberately absent: it rebuilds tensor subclasses by
// calling an arbitrary pickled type, and a state_dict of plain tensors never contains it.
bool storage_dtype(const std::string& global, DType& out) {
  if (global == "torch.FloatStorage")
    out = DType::kF32;
  else if (global == "torch.BFloat16Storage")
    out = DType::kBF16;
  else if (global == "torch.HalfStorage")
    out = DType::kF16;
  else
    return false;
  return true;
}

bool allowed_global(const std::string& g) {
  DType unused;
  return g == kOrderedDict || g == kRebuildTensor || g == kRebuildParam ||
         g == kRebuildParamState || storage_dtype(g, unused);
}

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> in, const std::string& label, const PickleLimits& limits)
      : in_(in), label_(label), limits_(limits) {}

  Value* run();

 private:
  CheckpointError error(const std::string& what) const {
    return CheckpointError(label_ + ": pickle offset " + std::to_string(op_pos_) + ": " + what);
  }
  const std::byte* take(uint64_t n) {
    if (n > in_.size() - pos_) throw error("truncated pickle");
    const std::byte* p = in_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint64_t take_uint(int n) { return load_le(take(n), n); }
  std::string take_line() {
    size_t end = pos_;
    while (end < in_.size() && in_[end] != std::byte{'\n'}) ++end;
    if (end == in_.size()) throw error("unterminated GLOBAL line");
    std::string s(reinterpret_cast<const char*>(in_.data() + pos_), end - pos_);
    pos_ = end + 1;
    return s;
  }
  Value* make(VKind kind) {
    if (arena_.size() >= limits_.max_values) throw error("too many pickle values");
    arena_.emplace_back();
    arena_.back().kind = kind;
    return &arena_.back();
  }
  void push(Value* v) {
    if (stack_.size() >= limits_.max_stack) throw error("pickle stack limit exceeded");
    stack_.push_back(v);
  }
  Value* pop() {
    if (stack_.size() <= floor()) throw error("pickle stack underflow");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    if (stack_.size() <= floor()) throw error("pickle stack underflow");
    return stack_.back();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<Value*> pop_to_mark() {
    if (marks_.empty()) throw error("no MARK on the stack");
    std::vector<Value*> items(stack_.begin() + static_cast<long>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  void add_child(Value* container, Value* child) {
    if (child->depth + 1 > limits_.max_depth)
      throw error("nesting deeper than " + std::to_string(limits_.max_depth));
    container->depth = std::max(container->depth, child->depth + 1);
    container->items.push_back(child);
  }
  Value* make_tuple(const std::vector<Value*>& items) {
    Value* t = make(VKind::kTuple);
    for (Value* v : items) add_child(t, v);
    return t;
  }
  Value* make_int(int64_t i) {
    Value* v = make(VKind::kInt);
    v->i = i;
    return v;
  }
  Value* make_string(std::string s) {
    Value* v = make(VKind::kString);
    v->s = std::move(s);
    return v;
  }
  Value* make_global(const std::string& module, const std::string& name) {
    const std::string g = module + "." + name;
    if (!allowed_global(g)) throw error("disallowed global '" + g + "'");
    Value* v = make(VKind::kGlobal);
    v->s = g;
    return v;
  }
  void memo_put(uint64_t index) {
    if (memo_.size() >= limits_.max_memo && !memo_.count(index)) throw error("memo limit exceeded");
    memo_[index] = top();
  }
  Value* memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) throw error("memo key " + std::to_string(index) + " not defined");
    return it->second;
  }
  void set_items(Value* dict, const std::vector<Value*>& kv) {
    if (dict->kind != VKind::kDict) throw error("SETITEM(S) on a non-dict");
    if (kv.size() % 2) throw error("odd number of items for SETITEMS");
    for (Value* v : kv) add_child(dict, v);
  }
  void append_items(Value* list, const std::vector<Value*>& items) {
    if (list->kind != VKind::kList) throw error("APPEND(S) on a non-list");
    for (Value* v : items) add_child(list, v);
  }
  Value* reduce(Value* callable, Value* args);
  Value* persistent_load(Value* pid);
  Value* rebuild_tensor(const std::vector<Value*>& a);
  void step(uint8_t op);

  std::span<const std::byte> in_;
  const std::string& label_;
  PickleLimits limits_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  bool stopped_ = false;
  std::deque<Value> arena_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
};

Value* Unpickler::persistent_load(Value* pid) {
  const auto& it = pid->items;
  if (pid->kind != VKind::kTuple || it.size() != 5 || it[0]->kind != VKind::kString ||
      it[0]->s != "storage" || it[1]->kind != VKind::kGlobal || it[2]->kind != VKind::kString ||
      it[3]->kind != VKind::kString || it[4]->kind != VKind::kInt)
    throw error("persistent id is not ('storage', type, key, location, numel)");
  Value* v = make(VKind::kStorage);
  if (!storage_dtype(it[1]->s, v->storage.dtype))
    throw error("unsupported storage type '" + it[1]->s + "' (need Float, BFloat16 or Half)");
  v->storage.key = it[2]->s;
  if (v->storage.key.empty() || v->storage.key.find('/') != std::string::npos ||
      v->storage.key.find("..") != std::string::npos)
    throw error("bad storage key '" + v->storage.key + "'");
  v->storage.numel = it[4]->i;
  if (v->storage.numel < 0) throw error("negative storage size");
  return v;
}

Value* Unpickler::rebuild_tensor(const std::vector<Value*>& a) {
  // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (a.size() != 6 && a.size() != 7) throw error("_rebuild_tensor_v2 takes 6 or 7 arguments");
  if (a[0]->kind != VKind::kStorage)
    throw error("_rebuild_tensor_v2: first argument not a storage");
  auto int_tuple = [&](const Value* v, const char* what) {
    if (v->kind != VKind::kTuple) throw error(std::string("_rebuild_tensor_v2: bad ") + what);
    std::vector<int64_t> out;
    for (const Value* e : v->items) {
      if (e->kind != VKind::kInt) throw error(std::string("_rebuild_tensor_v2: bad ") + what);
      out.push_back(e->i);
    }
    return out;
  };
  if (a[1]->kind != VKind::kInt) throw error("_rebuild_tensor_v2: bad storage offset");
  Value* t = make(VKind::kTensor);
  t->tensor.storage = a[0]->storage;
  t->tensor.storage_offset = a[1]->i;
  t->tensor.shape = int_tuple(a[2], "size");
  t->tensor.strides = int_tuple(a[3], "stride");
  if (t->tensor.shape.size() != t->tensor.strides.size())
    throw error("_rebuild_tensor_v2: size and stride ranks differ");
  if (t->tensor.shape.size() > 8) throw error("tensor rank above 8");
  // Last element index = offset + sum (size_i - 1) * stride_i must lie inside the storage.
  __int128 last = t->tensor.storage_offset, numel = 1;
  if (last < 0 || last > t->tensor.storage.numel) throw error("storage offset out of range");
  for (size_t d = 0; d < t->tensor.shape.size(); ++d) {
    const int64_t n = t->tensor.shape[d], s = t->tensor.strides[d];
    if (n < 0 || s < 0 || n > (int64_t{1} << 40) || s > (int64_t{1} << 40))
      throw error("tensor size/stride out of range");
    numel *= n;
    if (numel > (__int128{1} << 50)) throw error("tensor too large");
    if (n > 0) last += __int128{n - 1} * s;
  }
  if (numel > 0 && last >= t->tensor.storage.numel)
    throw error("tensor reaches element " + std::to_string(static_cast<int64_t>(last)) +
                " of storage '" + t->tensor.storage.key + "' holding only " +
                std::to_string(t->tensor.storage.numel));
  // More elements than its storage means a view overlapping itself (stride 0, expand()): a
  // handful of stored bytes would unfold into terabytes on read.
  if (numel > t->tensor.storage.numel - t->tensor.storage_offset)
    throw error("tensor of " + std::to_string(static_cast<int64_t>(numel)) +
                " elements overlaps itself in storage '" + t->tensor.storage.key + "' of " +
                std::to_string(t->tensor.storage.numel) + " elements");
  return t;
}

Value* Unpickler::reduce(Value* callable, Value* args) {
  if (callable->kind != VKind::kGlobal) throw error("REDUCE on a non-callable");
  if (args->kind != VKind::kTuple) throw error("REDUCE arguments are not a tuple");
  const std::string& g = callable->s;
  const auto& a = args->items;
  if (g == kOrderedDict) {
    if (!a.empty()) throw error("OrderedDict with arguments");
    return make(VKind::kDict);
  }
  if (g == kRebuildTensor) return rebuild_tensor(a);
  if (g == kRebuildParam || g == kRebuildParamState) {
    if (a.size() != (g == kRebuildParam ? 3u : 4u) || a[0]->kind != VKind::kTensor)
      throw error(g + ": unexpected arguments");
    return a[0];  // a Parameter is just its tensor here; requires_grad and hooks are ignored
  }
  throw error("global '" + g + "' is not callable");
}

void Unpickler::step(uint8_t op) {
  switch (op) {
    case 0x80: {  // PROTO
      const uint64_t proto = take_uint(1);
      if (proto < 2 || proto > 5)
        throw error("unsupported pickle protocol " + std::to_string(proto));
      break;
    }
    case 0x95:
      take(8);
      break;  // FRAME: framing is irrelevant for an in-memory buffer
    case '}':
      push(make(VKind::kDict));
      break;
    case ']':
      push(make(VKind::kList));
      break;
    case ')':
      push(make(VKind::kTuple));
      break;
    case '(':
      if (static_cast<int>(marks_.size()) >= limits_.max_depth)
        throw error("MARK nesting too deep");
      marks_.push_back(stack_.size());
      break;
    case 'X':
    case 0x8c:
    case 0x8d: {  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
      const uint64_t n = take_uint(op == 'X' ? 4 : op == 0x8c ? 1 : 8);
      const std::byte* p = take(n);
      push(make_string(std::string(reinterpret_cast<const char*>(p), n)));
      break;
    }
    case 'J':
      push(make_int(static_cast<int32_t>(take_uint(4))));
      break;
    case 'K':
      push(make_int(static_cast<int64_t>(take_uint(1))));
      break;
    case 'M':
      push(make_int(static_cast<int64_t>(take_uint(2))));
      break;
    case 0x8a: {  // LONG1: little-endian two's complement of n bytes
      const uint64_t n = take_uint(1);
      if (n > 8) throw error("LONG1 wider than 64 bits");
      uint64_t v = n ? load_le(take(n), static_cast<int>(n)) : 0;
      if (n && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);
      push(make_int(static_cast<int64_t>(v)));
      break;
    }
    case 'G': {  // BINFLOAT: big-endian IEEE double
      uint64_t bits = 0;
      const std::byte* p = take(8);
      for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(p[k]);
      Value* v = make(VKind::kFloat);
      v->f = std::bit_cast<double>(bits);
      push(v);
      break;
    }
    case 0x88:
    case 0x89: {
      Value* v = make(VKind::kBool);
      v->i = op == 0x88;
      push(v);
      break;
    }
    case 'N':
      push(make(VKind::kNone));
      break;
    case 't':
      push(make_tuple(pop_to_mark()));
      break;
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1..3
      std::vector<Value*> items(op - 0x84);
      for (size_t k = items.size(); k-- > 0;) items[k] = pop();
      push(make_tuple(items));
      break;
    }
    case 'c': {
      const std::string module = take_line();
      push(make_global(module, take_line()));
      break;
    }
    case 0x93: {  // STACK_GLOBAL
      Value* name = pop();
      Value* module = pop();
      if (name->kind != VKind::kString || module->kind != VKind::kString)
        throw error("STACK_GLOBAL needs two strings");
      push(make_global(module->s, name->s));
      break;
    }
    case 'R': {
      Value* args = pop();
      Value* callable = pop();
      push(reduce(callable, args));
      break;
    }
    case 'Q':
      push(persistent_load(pop()));
      break;
    case 'q':
      memo_put(take_uint(1));
      break;
    case 'r':
      memo_put(take_uint(4));
      break;
    case 0x94:
      memo_put(memo_.size());
      break;
    case 'h':
      push(memo_get(take_uint(1)));
      break;
    case 'j':
      push(memo_get(take_uint(4)));
      break;
    case 's': {
      Value* v = pop();
      Value* k = pop();
      set_items(top(), {k, v});
      break;
    }
    case 'u': {
      auto kv = pop_to_mark();
      set_items(top(), kv);
      break;
    }
    case 'a': {
      Value* v = pop();
      append_items(top(), {v});
      break;
    }
    case 'e': {
      auto items = pop_to_mark();
      append_items(top(), items);
      break;
    }
    case 'b': {  // BUILD: only the OrderedDict's __dict__ (state_dict._metadata), ignored
      pop();
      if (top()->kind != VKind::kDict) throw error("BUILD on a non-dict object");
      break;
    }
    case '.':
      stopped_ = true;
      break;
    default: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "unsupported pickle opcode 0x%02x", op);
      throw error(buf);
    }
  }
}

Value* Unpickler::run() {
  while (!stopped_) {
    op_pos_ = pos_;
    step(static_cast<uint8_t>(*take(1)));
  }
  if (stack_.empty() || !marks_.empty()) throw error("pickle ends with an unbalanced stack");
  return stack_.back();
}

}  // namespace

std::vector<PickledTensor> unpickle_state_dict(std::span<const std::byte> pickle,
                                               const std::string& label,
                                               const PickleLimits& limits) {
  Unpickler u(pickle, label, limits);
  const Value* root = u.run();
  if (root->kind != VKind::kDict) throw CheckpointError(label + ": pickle is not a state_dict");
  std::vector<PickledTensor> out;
  std::set<std::string> seen;
  for (size_t k = 0; k + 1 < root->items.size(); k += 2) {
    const Value* key = root->items[k];
    const Value* val = root->items[k + 1];
    if (key->kind != VKind::kString)
      throw CheckpointError(label + ": state_dict key is not a string");
    if (val->kind != VKind::kTensor)
      throw CheckpointError(label + ": state_dict entry '" + key->s + "' is not a tensor");
    if (!seen.insert(key->s).second)
      throw CheckpointError(label + ": duplicate state_dict key '" + key->s + "'");
    out.push_back(val->tensor);
    out.back().name = key->s;
  }
  return out;
}

}  // namespace mlra
