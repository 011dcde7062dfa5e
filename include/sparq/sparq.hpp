#pragma once
/// \file sparq.hpp
/// Umbrella header: everything an engine needs for SparQ and dense decode attention.

#include "config.hpp"
#include "counting_allocator.hpp"
#include "dense.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "kv_cache.hpp"
#include "merge.hpp"
#include "parallel.hpp"
#include "policy.hpp"
#include "stage1_scores.hpp"
#include "stage2_attend.hpp"
#include "stage3_reallocate.hpp"
#include "step.hpp"
#include "topk.hpp"
#include "traffic.hpp"
#include "version.hpp"
#include "view.hpp"
#include "workspace.hpp"
#include "workspace_buffer.hpp"
