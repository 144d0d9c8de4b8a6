#include "actors/program.hpp"

namespace loom::actors {

const char* to_string(op_kind k) {
  switch (k) {
    case op_kind::embed_f: return "embed_f";
    case op_kind::attn_f: return "attn_f";
    case op_kind::dispatch_f: return "dispatch_f";
    case op_kind::mlp_f: return "mlp_f";
    case op_kind::combine_f: return "combine_f";
    case op_kind::head_f: return "head_f";
    case op_kind::head_b: return "head_b";
    case op_kind::combine_b: return "combine_b";
    case op_kind::mlp_b: return "mlp_b";
    case op_kind::dispatch_b: return "dispatch_b";
    case op_kind::attn_b: return "attn_b";
    case op_kind::head_w: return "head_w";
    case op_kind::mlp_w: return "mlp_w";
    case op_kind::attn_w: return "attn_w";
    case op_kind::embed_w: return "embed_w";
    case op_kind::recv: return "recv";
    case op_kind::send: return "send";
  }
  return "?";
}

const char* component_name(op_kind k) {
  switch (k) {
    case op_kind::embed_f: return "f.embed";
    case op_kind::attn_f: return "f.attn";
    case op_kind::dispatch_f: return "f.dispatch";
    case op_kind::mlp_f: return "f.mlp";
    case op_kind::combine_f: return "f.combine";
    case op_kind::head_f: return "f.head";
    case op_kind::head_b: return "b.head";
    case op_kind::combine_b: return "b.combine";
    case op_kind::mlp_b: return "b.mlp";
    case op_kind::dispatch_b: return "b.dispatch";
    case op_kind::attn_b: return "b.attn";
    case op_kind::head_w: return "b.head.w";
    case op_kind::mlp_w: return "b.mlp.w";
    case op_kind::attn_w: return "b.attn.w";
    case op_kind::embed_w: return "b.embed.w";
    case op_kind::recv: return "p2p.recv";
    case op_kind::send: return "p2p.send";
  }
  return "?";
}

bool is_comm(op_kind k) {
  return k == op_kind::dispatch_f || k == op_kind::combine_f || k == op_kind::dispatch_b || k == op_kind::combine_b;
}

bool is_weight(op_kind k) {
  return k == op_kind::head_w || k == op_kind::mlp_w || k == op_kind::attn_w || k == op_kind::embed_w;
}

component_role role_of(op_kind k) {
  switch (k) {
    case op_kind::dispatch_f:
    case op_kind::dispatch_b: return component_role::dispatch;
    case op_kind::combine_f:
    case op_kind::combine_b: return component_role::combine;
    case op_kind::mlp_f:
    case op_kind::mlp_b:
    case op_kind::mlp_w: return component_role::mlp;
    default: return component_role::attention;
  }
}

}  // namespace loom::actors
