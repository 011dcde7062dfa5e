#pragma once
/// \file version.hpp
#define SPARQ_VERSION_MAJOR 0
#define SPARQ_VERSION_MINOR 1
#define SPARQ_VERSION_PATCH 0
#define SPARQ_VERSION_STRING "0.1.0"
